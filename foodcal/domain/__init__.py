"""Domain types and checks: a label, the items on a plate, a note, nutrient facts, calibrated ranges."""
