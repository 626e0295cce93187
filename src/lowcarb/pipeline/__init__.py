"""Recipes, the stage registry, the run context and the runner.

    recipe = load_recipe("recipes/text-classification.yaml", ["data.train=reviews.csv"])
    result = run_recipe(recipe)          # result.run_id, result.status, result.reports["html"]

A stage is `fn(ctx: RunContext, cfg) -> RunContext`, registered with
`@register_stage("name", ConfigModel)` in a module of `lowcarb.pipeline.stages`.
"""

from lowcarb.pipeline.context import RunContext, StageRecord
from lowcarb.pipeline.recipe import Recipe, StageStep, load_recipe, recipe_from_dict
from lowcarb.pipeline.registry import StageConfig, get_stage, register_stage, registered_stages
from lowcarb.pipeline.runner import RunResult, run_recipe

__all__ = [
    "Recipe",
    "RunContext",
    "RunResult",
    "StageConfig",
    "StageRecord",
    "StageStep",
    "get_stage",
    "load_recipe",
    "recipe_from_dict",
    "register_stage",
    "registered_stages",
    "run_recipe",
]
