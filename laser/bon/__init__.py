"""Best-of-n reranking with a learned router: `rerank`, `best_of_n` and the streaming `laser bon` runner."""

from laser.config import BON_FEEDBACK as FEEDBACK
from laser.config import BonSettings

from .inputs import BonInputError, PromptRow, read_prompts
from .rerank import BonError, Choice, Reranked, best_of_n, rerank
from .router import TrainedRouter, load_router
from .runner import BonRunner, choice_feedback, format_summary, run_bon, summarize

__all__ = ["FEEDBACK", "BonError", "BonInputError", "BonRunner", "BonSettings", "Choice", "PromptRow", "Reranked",
           "TrainedRouter", "best_of_n", "choice_feedback", "format_summary", "load_router", "read_prompts",
           "rerank", "run_bon", "summarize"]
