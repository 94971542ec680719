"""metakern ops: each registered with torch.library as ``torch.ops.metakern.<name>``."""

from .scan import linear_scan
from .scan_reference import linear_scan_reference
from .synapse import metods_step, metods_synapse
from .synapse_reference import metods_synapse_reference

__all__ = ["linear_scan", "linear_scan_reference", "metods_step", "metods_synapse", "metods_synapse_reference"]
