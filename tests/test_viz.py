from softviz.viz import training_curves


def test_training_curves_hold_the_metrics():
    runs = {"soft": [{"step": s, "reward": 10.0 * s, "entropy": 0.1, "cot/mean_length": 20.0,
                      **({"val/greedy_accuracy": 0.5 + 0.01 * s} if s % 2 == 0 else {})} for s in range(1, 7)],
            "hard": [{"step": s, "reward": 5.0, "entropy": 0.2, "cot/mean_length": 25.0} for s in range(1, 4)]}
    fig = training_curves(runs, smooth=1)
    val = [t for t in fig.data if t.name == "soft" and t.xaxis == "x"][0]
    assert list(val.x) == [2, 4, 6] and list(val.y) == [0.52, 0.54, 0.56]  # periodic metric: only where logged
    reward = [t for t in fig.data if t.name == "soft" and t.xaxis == "x2"][0]
    assert list(reward.y) == [10.0 * s for s in range(1, 7)]
    assert not [t for t in fig.data if t.name == "hard" and t.xaxis == "x"]  # the hard run has no validation
    assert fig.layout.annotations[0].text.startswith("greedy validation")
    smoothed = [t for t in training_curves(runs, smooth=3).data if t.name == "soft" and t.xaxis == "x2"][0]
    assert smoothed.y[2] == (10 + 20 + 30) / 3  # trailing moving average
