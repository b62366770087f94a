"""Dataset loaders that turn public files into :class:`~kedit.requests.Case` objects."""

from kedit.data.counterfact import load_counterfact
from kedit.data.demo import demo_cases
from kedit.data.loaders import LoadedDataset, RecordProblem
from kedit.data.registry import DATASETS, detect_format, load_dataset

__all__ = ["DATASETS", "LoadedDataset", "RecordProblem", "demo_cases", "detect_format", "load_counterfact",
           "load_dataset"]
