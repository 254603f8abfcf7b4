"""The quick part of the soak: 8 clients, a training run hot-swapping in the middle, zero failures."""

from tests.soak import soak


async def test_eight_clients_through_a_hot_swap_lose_nothing(tmp_path):
    report = await soak(duration_s=12.0, clients=8, workdir=tmp_path)
    print(report.summary())
    assert report.failed == 0, report.failures[:5]
    assert report.run_status == "TRAINING_RUN_STATUS_DEPLOYED"
    assert report.sent > 8
    assert report.inconsistent == 0
    assert set(report.versions_seen) <= {"0", "1"} and "1" in report.versions_seen
    for name in ("gateway", "labeler", "trainer"):
        start, end = report.fds[name]
        assert end <= start + 10, (name, start, end)  # no descriptor leak
