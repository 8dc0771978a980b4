"""The draw-frequency count (``python -m property_tests.draw_frequencies``) counts what
it draws: each feature at most once per draw, and hand-made strategies reach the
layouts they are weighted toward."""

from property_tests.draw_frequencies import SAVER_PROGRAM, count_features


def test_counts_every_draw_once_and_reaches_the_weighted_layouts():
    counts = count_features(40, "custom", random_seed=0)
    assert counts.pop("(draws)") == 40
    assert all(0 < count <= 40 for count in counts.values())
    assert counts["partition along axis > 0"] > 0
    assert counts["uneven partition"] > 0


def test_saver_programs_save_beyond_max_to_keep():
    counts = count_features(40, SAVER_PROGRAM, random_seed=0)
    assert counts.pop("(draws)") == 40
    assert any(feature.startswith("more saves than max_to_keep") for feature in counts)
