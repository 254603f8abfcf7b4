"""Which noted labels may train the photo-only nutrition head.

A label made with a person's note ("four servings", "no cheese") may carry what the photo cannot
show; the head only ever sees the photo, so learning such a label teaches it to answer every
similar photo as if it had the note: "four servings" on pizza photos would raise everyone's pizza.

The rule: a label without a note always trains. A noted label trains only when the note did not
move it far from what the photo alone gave at the time (the sample's own prediction, `pred_*`,
made without the note): its portion and its energy each within a factor of NOTE_MAX_FACTOR of it.
Otherwise it is shown to its person, kept, and counted, but not trained on. Without a photo-only
prediction to compare with, a noted label does not train.
"""

from __future__ import annotations

NOTE_MAX_FACTOR = 1.5  # x/÷ 1.5: "a bit more rice" trains, "two plates" does not


def _within(label: float | None, photo_only: float | None) -> bool:
    if label is None or photo_only is None or label <= 0 or photo_only <= 0:
        return False
    return 1 / NOTE_MAX_FACTOR <= label / photo_only <= NOTE_MAX_FACTOR


def may_train(sample) -> bool:
    """Whether a labelled sample's label may train the photo-only head. `sample`: a Sample row
    (foodcal.store.Sample) with its label job."""
    if not (sample.note or "").strip():
        return True
    job = sample.label_job
    return _within(job.label_portion_g, sample.pred_portion_g) and _within(
        job.label_calories_kcal, sample.pred_calories_kcal
    )
