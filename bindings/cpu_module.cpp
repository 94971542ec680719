// metakern._C: CPU kernels. Arguments are data pointers (ints from tensor.data_ptr()), sizes and
// dtype codes; the GIL is released while a kernel runs.
#include <omp.h>
#include <pybind11/pybind11.h>

#include "common.h"
#include "common/cpu_features.h"
#include "env_registry.h"
#include "estimators/estimator_ops.h"
#include "estimators/tabular_estimators.h"
#include "oracle/tabular_oracle.h"
#include "policy/gru_gates.h"
#include "policy/policy_log_prob.h"
#include "scan/linear_scan.h"
#include "synapse/metods.h"
#include "mujoco/mj_batch.h"

namespace py = pybind11;
using namespace metakern;

PYBIND11_MODULE(_C, m) {
  m.doc() = "metakern CPU kernels (C++17, OpenMP)";
  m.attr("__version__") = METAKERN_VERSION;
  metakern::envs::bind_registered_envs(m);

  m.def(
      "linear_scan",
      [](int dtype, std::uintptr_t x, std::uintptr_t a, std::uintptr_t carry, std::uintptr_t y,
         int64_t B, int64_t T, bool reverse, bool time_major, int num_threads) {
        const DType dt = to_dtype(dtype);
        check_sizes(B, T);
        check_ptr(x, "x");
        check_ptr(a, "a");
        check_ptr(carry, "carry");
        check_ptr(y, "y");
        py::gil_scoped_release release;
        linear_scan_cpu(dt, as_ptr<const void>(x), as_ptr<const void>(a),
                        as_ptr<const void>(carry), as_ptr<void>(y), B, T, reverse, time_major, num_threads);
      },
      py::arg("dtype"), py::arg("x"), py::arg("a"), py::arg("carry"), py::arg("y"), py::arg("B"),
      py::arg("T"), py::arg("reverse"), py::arg("time_major") = false, py::arg("num_threads") = 0,
      "y[b,t] = a[b,t]*y[b,t-/+1] + x[b,t] over contiguous [B, T] (or, time_major, [T, B]) buffers "
      "(see cpp/scan/linear_scan.h)");

  m.def(
      "linear_scan_backward",
      [](int dtype, std::uintptr_t gy, std::uintptr_t a, std::uintptr_t y, std::uintptr_t carry,
         std::uintptr_t g, std::uintptr_t da, int64_t B, int64_t T, bool reverse, bool time_major,
         int num_threads) {
        const DType dt = to_dtype(dtype);
        if (dt != DType::Float32 && dt != DType::Float64) {
          throw std::invalid_argument("metakern: linear_scan_backward takes float32 or float64");
        }
        check_sizes(B, T);
        check_ptr(gy, "gy");
        check_ptr(a, "a");
        check_ptr(y, "y");
        check_ptr(carry, "carry");
        check_ptr(g, "g");
        py::gil_scoped_release release;
        linear_scan_backward_cpu(dt, as_ptr<const void>(gy), as_ptr<const void>(a), as_ptr<const void>(y),
                                 as_ptr<const void>(carry), as_ptr<void>(g), da ? as_ptr<void>(da) : nullptr,
                                 B, T, reverse, time_major, num_threads);
      },
      py::arg("dtype"), py::arg("gy"), py::arg("a"), py::arg("y"), py::arg("carry"), py::arg("g"),
      py::arg("da"), py::arg("B"), py::arg("T"), py::arg("reverse"), py::arg("time_major"),
      py::arg("num_threads") = 0,
      "gradients of linear_scan w.r.t. x (g) and a (da, skipped when da is 0); see cpp/scan/linear_scan.h");

  m.def(
      "gae",
      [](int dtype, std::uintptr_t r, std::uintptr_t v, std::uintptr_t cont, std::uintptr_t cut,
         std::uintptr_t bootstrap, std::uintptr_t adv, std::uintptr_t ret, int64_t B, int64_t T, double gamma,
         double lam, bool time_major, int num_threads) {
        const DType dt = to_dtype(dtype);
        if (dt != DType::Float32 && dt != DType::Float64) {
          throw std::invalid_argument("metakern: gae takes float32 or float64");
        }
        check_sizes(B, T);
        check_ptr(r, "rewards");
        check_ptr(v, "values");
        check_ptr(adv, "advantages");
        check_ptr(ret, "returns");
        auto opt = [](std::uintptr_t p) { return p ? as_ptr<const void>(p) : nullptr; };
        py::gil_scoped_release release;
        gae_cpu(dt, as_ptr<const void>(r), as_ptr<const void>(v), opt(cont), opt(cut), opt(bootstrap),
                as_ptr<void>(adv), as_ptr<void>(ret), B, T, gamma, lam, time_major, num_threads);
      },
      py::arg("dtype"), py::arg("rewards"), py::arg("values"), py::arg("cont"), py::arg("cut"),
      py::arg("bootstrap"), py::arg("advantages"), py::arg("returns"), py::arg("B"), py::arg("T"),
      py::arg("gamma"), py::arg("lam"), py::arg("time_major"), py::arg("num_threads") = 0,
      "one-pass GAE (cont, cut, bootstrap may be 0 = absent); see cpp/scan/linear_scan.h");

  m.def(
      "oracle_maml_meta_gradient",
      [](std::uintptr_t P, std::uintptr_t R, std::uintptr_t init, std::uintptr_t theta0, int64_t B, int64_t S,
         int64_t A, double gamma, double alpha, int64_t K, std::uintptr_t meta_grad, std::uintptr_t objective,
         std::uintptr_t thetas, int num_threads) {
        check_sizes(B, S);
        check_sizes(A, K + 1);
        if (!(gamma >= 0.0 && gamma < 1.0)) throw std::invalid_argument("metakern: gamma must be in [0, 1)");
        for (auto [p, name] : {std::pair{P, "P"}, {R, "R"}, {init, "init"}, {theta0, "theta0"},
                               {meta_grad, "meta_grad"}, {objective, "objective"}}) {
          check_ptr(p, name);
        }
        py::gil_scoped_release release;
        oracle_maml_meta_gradient_cpu(as_ptr<const double>(P), as_ptr<const double>(R), as_ptr<const double>(init),
                                      as_ptr<const double>(theta0), B, S, A, gamma, alpha, K,
                                      as_ptr<double>(meta_grad), as_ptr<double>(objective), as_ptr<double>(thetas),
                                      num_threads);
      },
      py::arg("P"), py::arg("R"), py::arg("init"), py::arg("theta0"), py::arg("B"), py::arg("S"), py::arg("A"),
      py::arg("gamma"), py::arg("alpha"), py::arg("K"), py::arg("meta_grad"), py::arg("objective"),
      py::arg("thetas"), py::arg("num_threads") = 0,
      "exact K-step MAML meta-gradients of tabular softmax policies, float64 (cpp/oracle/tabular_oracle.h)");

  m.def(
      "estimator_terms",
      [](int dtype, int kind, std::uintptr_t logp, std::uintptr_t signal, std::uintptr_t values,
         std::uintptr_t behaviour, std::uintptr_t dones, std::uintptr_t u, std::uintptr_t value, std::uintptr_t g,
         std::uintptr_t y, int64_t B, int64_t T, double gamma, double lam, double cap, int num_threads) {
        const DType dt = to_dtype(dtype);
        check_sizes(B, T);
        check_ptr(logp, "logp");
        check_ptr(signal, "signal");
        auto in = [](std::uintptr_t p) { return p ? as_ptr<const void>(p) : nullptr; };
        auto out = [](std::uintptr_t p) { return p ? as_ptr<void>(p) : nullptr; };
        py::gil_scoped_release release;
        estimator_terms_cpu(dt, kind, as_ptr<const void>(logp), as_ptr<const void>(signal), in(values), in(behaviour),
                            dones ? as_ptr<const uint8_t>(dones) : nullptr, in(u), out(value), out(g), out(y), B, T,
                            gamma, lam, cap, num_threads);
      },
      py::arg("dtype"), py::arg("kind"), py::arg("logp"), py::arg("signal"), py::arg("values"),
      py::arg("behaviour"), py::arg("dones"), py::arg("u"), py::arg("value"), py::arg("g"), py::arg("y"),
      py::arg("B"), py::arg("T"), py::arg("gamma"), py::arg("lam"), py::arg("cap"), py::arg("num_threads") = 0,
      "value, log-prob gradient and Hessian-vector product of a magic-box estimator objective per row "
      "(see cpp/estimators/estimator_ops.h); null pointers skip outputs");

  m.def(
      "tabular_estimator_derivatives",
      [](int estimator, std::uintptr_t theta, std::uintptr_t v, std::uintptr_t states, std::uintptr_t actions,
         bool idx32, std::uintptr_t signal, int64_t B, int64_t T, int64_t S, int64_t A, double gamma, double lam,
         std::uintptr_t grad, std::uintptr_t hvp, std::uintptr_t value, int num_threads) {
        if (estimator < 0 || estimator > 2) throw std::invalid_argument("metakern: unknown estimator code");
        check_sizes(B, T);
        check_sizes(S, A);
        for (auto [p, name] : {std::pair{theta, "theta"}, {v, "v"}, {states, "states"}, {actions, "actions"},
                               {signal, "signal"}, {grad, "grad"}, {hvp, "hvp"}, {value, "value"}}) {
          check_ptr(p, name);
        }
        py::gil_scoped_release release;
        return tabular_estimator_derivatives_cpu(estimator, as_ptr<const double>(theta), as_ptr<const double>(v),
                                                 as_ptr<const void>(states), as_ptr<const void>(actions), idx32,
                                                 as_ptr<const double>(signal), B, T, S, A, gamma, lam,
                                                 as_ptr<double>(grad), as_ptr<double>(hvp), as_ptr<double>(value),
                                                 num_threads);
      },
      py::arg("estimator"), py::arg("theta"), py::arg("v"), py::arg("states"), py::arg("actions"), py::arg("idx32"),
      py::arg("signal"), py::arg("B"), py::arg("T"), py::arg("S"), py::arg("A"), py::arg("gamma"), py::arg("lam"),
      py::arg("grad"), py::arg("hvp"), py::arg("value"), py::arg("num_threads") = 0,
      "value, gradient and Hessian-vector product (batch means) of an estimator objective for the tabular "
      "softmax policy softmax(theta) (cpp/estimators/tabular_estimators.h); returns -1, or the flat index of "
      "the first step with an out-of-range state or action");

  // Softmax policy log-probs (cpp/policy/policy_log_prob.h): each returns -1, or the flat index of the
  // first step whose state or action is out of range. Null (0) optional pointers are skipped.
  m.def(
      "tabular_log_prob",
      [](int dtype, int index_code, std::uintptr_t theta, std::uintptr_t states, std::uintptr_t actions,
         std::uintptr_t out, int64_t N, int64_t M, int64_t S, int64_t A, int num_threads) {
        const DType dt = to_dtype(dtype);
        check_sizes(N, M);
        check_sizes(S, A);
        for (auto [p, name] : {std::pair{theta, "theta"}, {states, "states"}, {actions, "actions"}, {out, "out"}}) {
          check_ptr(p, name);
        }
        py::gil_scoped_release release;
        return tabular_log_prob_cpu(dt, index_code, as_ptr<const void>(theta), as_ptr<const void>(states),
                                    as_ptr<const void>(actions), as_ptr<void>(out), N, M, S, A, num_threads);
      },
      py::arg("dtype"), py::arg("index_code"), py::arg("theta"), py::arg("states"), py::arg("actions"),
      py::arg("out"), py::arg("N"), py::arg("M"), py::arg("S"), py::arg("A"), py::arg("num_threads") = 0,
      "l[n, m] = log_softmax(theta[n, s_m])[a_m]");

  m.def(
      "tabular_log_prob_backward",
      [](int dtype, int index_code, std::uintptr_t gl, std::uintptr_t theta, std::uintptr_t states,
         std::uintptr_t actions, std::uintptr_t grad_theta, int64_t N, int64_t M, int64_t S, int64_t A,
         int num_threads) {
        const DType dt = to_dtype(dtype);
        check_sizes(N, M);
        check_sizes(S, A);
        for (auto [p, name] : {std::pair{gl, "gl"}, {theta, "theta"}, {states, "states"}, {actions, "actions"},
                               {grad_theta, "grad_theta"}}) {
          check_ptr(p, name);
        }
        py::gil_scoped_release release;
        return tabular_log_prob_backward_cpu(dt, index_code, as_ptr<const void>(gl), as_ptr<const void>(theta),
                                             as_ptr<const void>(states), as_ptr<const void>(actions),
                                             as_ptr<void>(grad_theta), N, M, S, A, num_threads);
      },
      py::arg("dtype"), py::arg("index_code"), py::arg("gl"), py::arg("theta"), py::arg("states"),
      py::arg("actions"), py::arg("grad_theta"), py::arg("N"), py::arg("M"), py::arg("S"), py::arg("A"),
      py::arg("num_threads") = 0, "VJP of tabular_log_prob: sum_m gl_m e_{s_m} (e_{a_m} - pi_{s_m})");

  m.def(
      "tabular_log_prob_double_backward",
      [](int dtype, int index_code, std::uintptr_t gl, std::uintptr_t theta, std::uintptr_t states,
         std::uintptr_t actions, std::uintptr_t v, std::uintptr_t u, std::uintptr_t d_theta, int64_t N, int64_t M,
         int64_t S, int64_t A, int num_threads) {
        const DType dt = to_dtype(dtype);
        check_sizes(N, M);
        check_sizes(S, A);
        for (auto [p, name] : {std::pair{gl, "gl"}, {theta, "theta"}, {states, "states"}, {actions, "actions"},
                               {v, "v"}}) {
          check_ptr(p, name);
        }
        py::gil_scoped_release release;
        return tabular_log_prob_double_backward_cpu(
            dt, index_code, as_ptr<const void>(gl), as_ptr<const void>(theta), as_ptr<const void>(states),
            as_ptr<const void>(actions), as_ptr<const void>(v), u ? as_ptr<void>(u) : nullptr,
            d_theta ? as_ptr<void>(d_theta) : nullptr, N, M, S, A, num_threads);
      },
      py::arg("dtype"), py::arg("index_code"), py::arg("gl"), py::arg("theta"), py::arg("states"),
      py::arg("actions"), py::arg("v"), py::arg("u"), py::arg("d_theta"), py::arg("N"), py::arg("M"), py::arg("S"),
      py::arg("A"), py::arg("num_threads") = 0,
      "VJP of tabular_log_prob_backward: u (w.r.t. gl) and d_theta; u, d_theta may be 0");

  m.def(
      "linear_softmax_log_prob",
      [](int dtype, int index_code, std::uintptr_t weight, std::uintptr_t features, std::uintptr_t actions,
         std::uintptr_t out, int64_t N, int64_t M, int64_t F, int64_t A, int num_threads) {
        const DType dt = to_dtype(dtype);
        check_sizes(N, M);
        check_sizes(F, A);
        for (auto [p, name] : {std::pair{weight, "weight"}, {features, "features"}, {actions, "actions"},
                               {out, "out"}}) {
          check_ptr(p, name);
        }
        py::gil_scoped_release release;
        return linear_softmax_log_prob_cpu(dt, index_code, as_ptr<const void>(weight), as_ptr<const void>(features),
                                           as_ptr<const void>(actions), as_ptr<void>(out), N, M, F, A, num_threads);
      },
      py::arg("dtype"), py::arg("index_code"), py::arg("weight"), py::arg("features"), py::arg("actions"),
      py::arg("out"), py::arg("N"), py::arg("M"), py::arg("F"), py::arg("A"), py::arg("num_threads") = 0,
      "l[n, m] = log_softmax(features[n, m] @ weight[n])[a_m]");

  m.def(
      "linear_softmax_log_prob_backward",
      [](int dtype, int index_code, std::uintptr_t gl, std::uintptr_t weight, std::uintptr_t features,
         std::uintptr_t actions, std::uintptr_t grad_weight, std::uintptr_t grad_features, int64_t N, int64_t M,
         int64_t F, int64_t A, int num_threads) {
        const DType dt = to_dtype(dtype);
        check_sizes(N, M);
        check_sizes(F, A);
        for (auto [p, name] : {std::pair{gl, "gl"}, {weight, "weight"}, {features, "features"},
                               {actions, "actions"}}) {
          check_ptr(p, name);
        }
        py::gil_scoped_release release;
        return linear_softmax_log_prob_backward_cpu(
            dt, index_code, as_ptr<const void>(gl), as_ptr<const void>(weight), as_ptr<const void>(features),
            as_ptr<const void>(actions), grad_weight ? as_ptr<void>(grad_weight) : nullptr,
            grad_features ? as_ptr<void>(grad_features) : nullptr, N, M, F, A, num_threads);
      },
      py::arg("dtype"), py::arg("index_code"), py::arg("gl"), py::arg("weight"), py::arg("features"),
      py::arg("actions"), py::arg("grad_weight"), py::arg("grad_features"), py::arg("N"), py::arg("M"),
      py::arg("F"), py::arg("A"), py::arg("num_threads") = 0,
      "VJP of linear_softmax_log_prob w.r.t. weight and features (either output pointer may be 0)");

  m.def(
      "linear_softmax_log_prob_double_backward",
      [](int dtype, int index_code, std::uintptr_t gl, std::uintptr_t weight, std::uintptr_t features,
         std::uintptr_t actions, std::uintptr_t v_weight, std::uintptr_t v_features, std::uintptr_t u,
         std::uintptr_t d_weight, std::uintptr_t d_features, int64_t N, int64_t M, int64_t F, int64_t A,
         int num_threads) {
        const DType dt = to_dtype(dtype);
        check_sizes(N, M);
        check_sizes(F, A);
        for (auto [p, name] : {std::pair{gl, "gl"}, {weight, "weight"}, {features, "features"},
                               {actions, "actions"}}) {
          check_ptr(p, name);
        }
        auto opt = [](std::uintptr_t p) { return p ? as_ptr<const void>(p) : nullptr; };
        auto out = [](std::uintptr_t p) { return p ? as_ptr<void>(p) : nullptr; };
        py::gil_scoped_release release;
        return linear_softmax_log_prob_double_backward_cpu(
            dt, index_code, as_ptr<const void>(gl), as_ptr<const void>(weight), as_ptr<const void>(features),
            as_ptr<const void>(actions), opt(v_weight), opt(v_features), out(u), out(d_weight), out(d_features), N,
            M, F, A, num_threads);
      },
      py::arg("dtype"), py::arg("index_code"), py::arg("gl"), py::arg("weight"), py::arg("features"),
      py::arg("actions"), py::arg("v_weight"), py::arg("v_features"), py::arg("u"), py::arg("d_weight"),
      py::arg("d_features"), py::arg("N"), py::arg("M"), py::arg("F"), py::arg("A"), py::arg("num_threads") = 0,
      "VJP of linear_softmax_log_prob_backward (cotangents v_weight, v_features may be 0 = zero)");

  // MetODS dynamic synapses (cpp/synapse/metods.h). Optional pointers are 0.
  auto metods_args = [](int64_t B, int64_t T, int64_t N, int S, int activation, int64_t C, bool w0_batched,
                        int num_threads) {
    check_sizes(B, T);
    check_sizes(N, S);
    if (S > 16 || C <= 0 || activation < 0 || activation > 2) {
      throw std::invalid_argument("metakern: metods: need 1 <= S <= 16, checkpoint_every >= 1, activation 0..2");
    }
    MetodsArgs a;
    a.B = B;
    a.T = T;
    a.N = N;
    a.S = S;
    a.activation = activation;
    a.checkpoint_every = C;
    a.w0_batched = w0_batched;
    a.num_threads = num_threads;
    return a;
  };
  m.def(
      "metods_forward",
      [metods_args](int dtype, std::uintptr_t v0, std::uintptr_t W0, std::uintptr_t alpha, std::uintptr_t kappa,
                    std::uintptr_t gamma, std::uintptr_t coef, std::uintptr_t reset, std::uintptr_t vS,
                    std::uintptr_t WT, std::uintptr_t vs, std::uintptr_t ps, std::uintptr_t ckpt, int64_t B,
                    int64_t T, int64_t N, int S, int activation, int64_t C, bool w0_batched, int num_threads) {
        const DType dt = to_dtype(dtype);
        const MetodsArgs a = metods_args(B, T, N, S, activation, C, w0_batched, num_threads);
        for (auto [p, name] : {std::pair{v0, "v0"}, {W0, "W0"}, {alpha, "alpha"}, {kappa, "kappa"},
                               {gamma, "gamma"}, {coef, "coef"}, {vS, "vS"}, {WT, "WT"}}) {
          check_ptr(p, name);
        }
        if (vs && (!ps || (!ckpt && (T + C - 1) / C > 1))) {
          throw std::invalid_argument("metakern: metods_forward: saving needs vs, ps and ckpt");
        }
        auto opt = [](std::uintptr_t p) { return p ? as_ptr<void>(p) : nullptr; };
        py::gil_scoped_release release;
        metods_forward_cpu(dt, a, as_ptr<const void>(v0), as_ptr<const void>(W0), as_ptr<const void>(alpha),
                           as_ptr<const void>(kappa), as_ptr<const void>(gamma), as_ptr<const void>(coef),
                           reset ? as_ptr<const uint8_t>(reset) : nullptr, as_ptr<void>(vS), as_ptr<void>(WT),
                           opt(vs), opt(ps), opt(ckpt));
      },
      py::arg("dtype"), py::arg("v0"), py::arg("W0"), py::arg("alpha"), py::arg("kappa"), py::arg("gamma"),
      py::arg("coef"), py::arg("reset"), py::arg("vS"), py::arg("WT"), py::arg("vs"), py::arg("ps"),
      py::arg("ckpt"), py::arg("B"), py::arg("T"), py::arg("N"), py::arg("S"), py::arg("activation"),
      py::arg("checkpoint_every"), py::arg("w0_batched"), py::arg("num_threads") = 0,
      "MetODS synapse recurrence over [B, T, N] sequences; saves vectors and checkpoints when vs is non-zero");

  m.def(
      "metods_backward",
      [metods_args](int dtype, std::uintptr_t gvS, std::uintptr_t gWT, std::uintptr_t v0, std::uintptr_t W0,
                    std::uintptr_t alpha, std::uintptr_t kappa, std::uintptr_t gamma, std::uintptr_t coef,
                    std::uintptr_t reset, std::uintptr_t vs, std::uintptr_t ps, std::uintptr_t ckpt,
                    std::uintptr_t dv0, std::uintptr_t dW0, std::uintptr_t dalpha, std::uintptr_t dkappa,
                    std::uintptr_t dgamma, std::uintptr_t dcoef, int64_t B, int64_t T, int64_t N, int S,
                    int activation, int64_t C, bool w0_batched, int num_threads) {
        const DType dt = to_dtype(dtype);
        const MetodsArgs a = metods_args(B, T, N, S, activation, C, w0_batched, num_threads);
        for (auto [p, name] : {std::pair{v0, "v0"}, {W0, "W0"}, {alpha, "alpha"}, {kappa, "kappa"},
                               {gamma, "gamma"}, {coef, "coef"}, {vs, "vs"}, {ps, "ps"}, {dv0, "dv0"},
                               {dW0, "dW0"}, {dalpha, "dalpha"}, {dkappa, "dkappa"}, {dgamma, "dgamma"},
                               {dcoef, "dcoef"}}) {
          check_ptr(p, name);
        }
        if (!ckpt && (T + C - 1) / C > 1) throw std::invalid_argument("metakern: metods_backward: null ckpt");
        auto opt = [](std::uintptr_t p) { return p ? as_ptr<const void>(p) : nullptr; };
        py::gil_scoped_release release;
        metods_backward_cpu(dt, a, opt(gvS), opt(gWT), as_ptr<const void>(v0), as_ptr<const void>(W0),
                            as_ptr<const void>(alpha), as_ptr<const void>(kappa), as_ptr<const void>(gamma),
                            as_ptr<const void>(coef), reset ? as_ptr<const uint8_t>(reset) : nullptr,
                            as_ptr<const void>(vs), as_ptr<const void>(ps), opt(ckpt), as_ptr<void>(dv0),
                            as_ptr<void>(dW0), as_ptr<void>(dalpha), as_ptr<void>(dkappa), as_ptr<void>(dgamma),
                            as_ptr<void>(dcoef));
      },
      py::arg("dtype"), py::arg("gvS"), py::arg("gWT"), py::arg("v0"), py::arg("W0"), py::arg("alpha"),
      py::arg("kappa"), py::arg("gamma"), py::arg("coef"), py::arg("reset"), py::arg("vs"), py::arg("ps"),
      py::arg("ckpt"), py::arg("dv0"), py::arg("dW0"), py::arg("dalpha"), py::arg("dkappa"), py::arg("dgamma"),
      py::arg("dcoef"), py::arg("B"), py::arg("T"), py::arg("N"), py::arg("S"), py::arg("activation"),
      py::arg("checkpoint_every"), py::arg("w0_batched"), py::arg("num_threads") = 0,
      "gradients of metods_forward from gvS / gWT (0 = zero), recomputing W from the checkpoints");

  m.def("mj_load_api", []() { return mj::load_api(); },
        "resolve mj_step / mj_rnePostConstraint from the libmujoco loaded by `import mujoco`; '' or the reason not");
  m.def("mj_library", []() { return mj::api_library(); });
  m.def(
      "mj_batch_step",
      [](int64_t B, std::uintptr_t models, std::uintptr_t datas, std::uintptr_t ctrl, int64_t nu,
         std::uintptr_t ctrl_dst, int frame_skip, bool post_constraint, std::uintptr_t active, int64_t nfield,
         std::uintptr_t src, std::uintptr_t len, std::uintptr_t dst, int num_threads) {
        if (B < 1 || nu < 0 || frame_skip < 1 || nfield < 0) {
          throw std::invalid_argument("metakern: mj_batch_step: bad sizes");
        }
        for (auto [p, name] : {std::pair{models, "models"}, {datas, "datas"}, {ctrl_dst, "ctrl_dst"}}) {
          check_ptr(p, name);
        }
        if (nu > 0) check_ptr(ctrl, "ctrl");
        if (nfield > 0) {
          check_ptr(src, "src");
          check_ptr(len, "len");
          check_ptr(dst, "dst");
        }
        const std::string err = mj::load_api();
        if (!err.empty()) throw std::runtime_error("metakern: " + err);
        const mj::GatherSpec g{nfield, as_ptr<const int64_t>(src), as_ptr<const int64_t>(len),
                               as_ptr<const int64_t>(dst)};
        py::gil_scoped_release release;
        mj::batch_step(B, as_ptr<const int64_t>(models), as_ptr<const int64_t>(datas), as_ptr<const double>(ctrl),
                       nu, as_ptr<const int64_t>(ctrl_dst), frame_skip, post_constraint,
                       active ? as_ptr<const uint8_t>(active) : nullptr, g, num_threads);
      },
      py::arg("B"), py::arg("models"), py::arg("datas"), py::arg("ctrl"), py::arg("nu"), py::arg("ctrl_dst"),
      py::arg("frame_skip"), py::arg("post_constraint"), py::arg("active"), py::arg("nfield"), py::arg("src"),
      py::arg("len"), py::arg("dst"), py::arg("num_threads") = 0,
      "step B MuJoCo (model, data) pairs frame_skip times each on OpenMP threads, then gather fields "
      "(see cpp/mujoco/mj_batch.h)");
  m.def(
      "mj_batch_gather",
      [](int64_t B, std::uintptr_t active, int64_t nfield, std::uintptr_t src, std::uintptr_t len,
         std::uintptr_t dst) {
        if (B < 1 || nfield < 0) throw std::invalid_argument("metakern: mj_batch_gather: bad sizes");
        if (nfield == 0) return;
        check_ptr(src, "src");
        check_ptr(len, "len");
        check_ptr(dst, "dst");
        const mj::GatherSpec g{nfield, as_ptr<const int64_t>(src), as_ptr<const int64_t>(len),
                               as_ptr<const int64_t>(dst)};
        py::gil_scoped_release release;
        mj::batch_gather(B, active ? as_ptr<const uint8_t>(active) : nullptr, g);
      },
      py::arg("B"), py::arg("active"), py::arg("nfield"), py::arg("src"), py::arg("len"), py::arg("dst"));

  // GRU gate arithmetic of one step (cpp/policy/gru_gates.h); dtype 0 = float32, 1 = float64.
  m.def(
      "gru_gates_forward",
      [](int dtype, std::uintptr_t gi, int64_t gi_stride, std::uintptr_t gh, std::uintptr_t hp, std::uintptr_t gates,
         std::uintptr_t ghn, std::uintptr_t h, int64_t B, int64_t H) {
        check_sizes(B, H);
        for (auto [p, name] : {std::pair{gi, "gi"}, {gh, "gh"}, {hp, "hp"}, {gates, "gates"}, {ghn, "ghn"}, {h, "h"}}) {
          check_ptr(p, name);
        }
        if (gi_stride < 3 * H) throw std::invalid_argument("gru_gates_forward: gi_stride < 3H");
        py::gil_scoped_release release;
        gru_gates_forward_cpu(dtype, as_ptr<const void>(gi), gi_stride, as_ptr<const void>(gh), as_ptr<const void>(hp),
                              as_ptr<void>(gates), as_ptr<void>(ghn), as_ptr<void>(h), B, H);
      },
      "r, z, n = GRU gates from gi and gh; h = n + z (hp - n)");
  m.def(
      "gru_gates_backward",
      [](int dtype, std::uintptr_t dh_carry, std::uintptr_t d_out, int64_t d_out_stride, std::uintptr_t gates,
         std::uintptr_t ghn, std::uintptr_t hp, std::uintptr_t dgi, std::uintptr_t dgh, std::uintptr_t dh_z, int64_t B,
         int64_t H) {
        check_sizes(B, H);
        for (auto [p, name] : {std::pair{dh_carry, "dh_carry"}, {d_out, "d_out"}, {gates, "gates"}, {ghn, "ghn"},
                               {hp, "hp"}, {dgi, "dgi"}, {dgh, "dgh"}, {dh_z, "dh_z"}}) {
          check_ptr(p, name);
        }
        if (d_out_stride < H) throw std::invalid_argument("gru_gates_backward: d_out_stride < H");
        py::gil_scoped_release release;
        gru_gates_backward_cpu(dtype, as_ptr<const void>(dh_carry), as_ptr<const void>(d_out), d_out_stride,
                               as_ptr<const void>(gates), as_ptr<const void>(ghn), as_ptr<const void>(hp),
                               as_ptr<void>(dgi), as_ptr<void>(dgh), as_ptr<void>(dh_z), B, H);
      },
      "the VJP of one GRU gate step: dgi, dgh and dh * z");

  m.def("simd_isa", []() { return std::string(isa_name(isa_level())); });
  m.def("omp_max_threads", []() { return omp_get_max_threads(); });
  m.def("openmp_version", []() { return static_cast<int>(_OPENMP); });
  m.def("compiler", []() {
#if defined(__clang__)
    return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("gcc ") + __VERSION__;
#else
    return std::string("unknown");
#endif
  });
}
