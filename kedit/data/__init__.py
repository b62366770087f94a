"""Dataset loaders that turn public files into :class:`~kedit.requests.Case` objects."""

from kedit.data.counterfact import load_counterfact
from kedit.data.demo import demo_cases

__all__ = ["demo_cases", "load_counterfact"]
