"""The task catalogue: one builder module per task, registered by name in ``TASK_BUILDERS``."""

from __future__ import annotations

from recfound.data.tasks.answer_generation import AnswerGenerationBuilder
from recfound.data.tasks.answerability_prediction import AnswerabilityPredictionBuilder
from recfound.data.tasks.attribute_value_extraction import AttributeValueExtractionBuilder
from recfound.data.tasks.base import TaskBuilder, TaskContext
from recfound.data.tasks.candidate_ranking import CandidateRankingBuilder
from recfound.data.tasks.conversational_rec import ConversationalRecBuilder
from recfound.data.tasks.ctr_prediction import CTRPredictionBuilder
from recfound.data.tasks.explanation_generation import ExplanationGenerationBuilder
from recfound.data.tasks.item2item import Item2ItemBuilder
from recfound.data.tasks.item_profile import ItemProfileBuilder
from recfound.data.tasks.product_matching import ProductMatchingBuilder
from recfound.data.tasks.product_relation_prediction import ProductRelationPredictionBuilder
from recfound.data.tasks.query2item import Query2ItemBuilder
from recfound.data.tasks.query_rewriting import QueryRewritingBuilder
from recfound.data.tasks.rating_prediction import RatingPredictionBuilder
from recfound.data.tasks.sentiment_analysis import SentimentAnalysisBuilder
from recfound.data.tasks.sequential_recommendation import SequentialRecommendationBuilder
from recfound.data.tasks.user2item import User2ItemBuilder
from recfound.data.tasks.user_profile import UserProfileBuilder
from recfound.data.tasks.zero_shot import ZeroShotBuilder

_BUILDERS: tuple[TaskBuilder, ...] = (
    User2ItemBuilder(),
    Query2ItemBuilder(),
    Item2ItemBuilder(),
    QueryRewritingBuilder(),
    SequentialRecommendationBuilder(),
    ProductRelationPredictionBuilder(),
    SentimentAnalysisBuilder(),
    AttributeValueExtractionBuilder(),
    ProductMatchingBuilder(),
    UserProfileBuilder(),
    ItemProfileBuilder(),
    AnswerabilityPredictionBuilder(),
    AnswerGenerationBuilder(),
    RatingPredictionBuilder(),
    CTRPredictionBuilder(),
    CandidateRankingBuilder(),
    ExplanationGenerationBuilder(),
    ConversationalRecBuilder(),
    ZeroShotBuilder(),
)

TASK_BUILDERS: dict[str, TaskBuilder] = {builder.name: builder for builder in _BUILDERS}

__all__ = ["TASK_BUILDERS", "TaskBuilder", "TaskContext"]
