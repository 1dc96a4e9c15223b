"""softviz: see and try continuous ("soft") chain-of-thought tokens (Butt et al. 2025, Soft Tokens, Hard Truths)."""

from softviz.config import Mode, TraceConfig
from softviz.generate import Rollouts, generate
from softviz.models import load_model
from softviz.trace import Trace

__version__ = "0.1.0"
__all__ = ["Mode", "Rollouts", "Trace", "TraceConfig", "generate", "load_model"]
