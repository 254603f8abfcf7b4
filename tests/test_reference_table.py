import json

from foodcal.nutrition import atwater_kcal
from model_store.reference import food101_labels, reference_table


def test_table_covers_all_101_food101_classes_of_the_checkpoint(model_store):
    config = json.loads((model_store.parent / "checkpoints" / "food101" / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(101)]
    assert len(food101_labels()) == 101
    assert sorted(labels) == food101_labels()


def test_every_row_is_positive_plausible_and_consistent_with_atwater():
    for dish in reference_table().values():
        assert 30 <= dish.serving_g <= 700, dish
        assert 20 <= dish.calories_kcal <= 1800, dish
        for grams in (dish.proteins_g, dish.fats_g, dish.carbs_g):
            assert 0 < grams <= dish.serving_g, dish
        expected = atwater_kcal(dish.proteins_g, dish.fats_g, dish.carbs_g)
        assert abs(dish.calories_kcal - expected) <= 0.15 * expected, (
            dish.label,
            dish.calories_kcal,
            expected,
        )
        assert dish.source, dish
