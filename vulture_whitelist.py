"""Names vulture (dead-code finder, `make lint`) reports that are not dead, each with the reason.

Checked by `make lint` and tests/test_layering.py with the settings in pyproject.toml
([tool.vulture]): validators (pydantic decorators) and framework hooks are ignored there; what
is listed here is used where vulture does not look (tests, the README's examples, serialised
reports) or set on a library object for its effect.
"""

from recfound.artifacts import PublishedUnit
from recfound.data.export import read_recbole_split
from recfound.data.schema import INTERACTION_COLUMNS
from recfound.data.semantic_ids import constrained_beam_search, exhaustive_scores
from recfound.device.runtime import DeviceModel
from recfound.metrics import bleu, corpus_rouge_l_f1
from recfound.stages.ablate import run_ablate

# Public API used by users (README) and tests, not by the pipeline itself:
read_recbole_split  # the RecBole split files read back (README "Export for RecBole")
DeviceModel.retrieve  # the device artifact's embedding entry point (README "On device")
constrained_beam_search  # semantic-ID generation for catalogues too large to score whole
exhaustive_scores  # its reference (tests: beam as wide as the catalogue equals it)
bleu  # corpus forms of the metrics evaluation computes per record (tests compare the two)
corpus_rouge_l_f1
PublishedUnit.include  # a path added to a unit after staging (tests/test_artifacts.py)
INTERACTION_COLUMNS  # the interactions table's column contract (sources and tests build it)
run_ablate  # `recfound ablate`: recfound/cli.py imports a stage's run_<name> by its name
