from pathlib import Path

from foodcal.domain.nutrition import atwater_kcal
from model_store.reference import food101_labels, reference_table


def test_table_covers_exactly_the_101_food101_classes_in_index_order():
    # Food-101's own meta/classes.txt (Bossard et al., 2014), kept apart from the table: the demo
    # classifier's labels come from the table, so they cannot check it.
    classes = (Path(__file__).parent / "data" / "food101_classes.txt").read_text().split()
    assert len(classes) == 101
    assert food101_labels() == classes


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
