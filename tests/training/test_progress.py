import io

from rich.console import Console

from taa.training.progress import TrainingProgress


def _plain_lines(**kwargs) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with TrainingProgress(2, console=console, log_seconds=0.0, **kwargs) as bar:
        bar.update(1, loss=0.5, lr=1e-3, tokens_per_s=1234.0)
        bar.update(2, loss=0.25, lr=5e-4, tokens_per_s=456.0)
    return out.getvalue()


def test_a_log_gets_a_plain_line_per_update_with_the_rate_in_tokens():
    text = _plain_lines()
    assert "step 1/2 loss 0.5000 lr 1.00e-03 1,234 tok/s" in text
    assert "step 2/2 loss 0.2500 lr 5.00e-04 456 tok/s" in text


def test_a_classifier_counts_sentences():
    text = _plain_lines(unit="sent")
    assert "1,234 sent/s" in text and "tok/s" not in text


def test_phases_get_a_line_each_in_a_log_and_the_label_while_training():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    bar = TrainingProgress(2, console=console, log_seconds=0.0)
    with bar.phase("data preparation"):
        pass
    with bar:
        with bar.phase("validation"):
            assert bar.progress.tasks[0].fields["phase"] == "validation"
        assert bar.progress.tasks[0].fields["phase"] == "train"
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["data preparation", "validation"]
    assert all(line.endswith("s") for line in lines)


def test_a_terminal_shows_phases_on_the_bar_and_a_disabled_bar_nothing():
    out = io.StringIO()
    bar = TrainingProgress(2, console=Console(file=out, force_terminal=True, width=200))
    with bar:
        with bar.phase("validation"):
            pass
    assert "validation:" not in out.getvalue()  # the label said it; no line over the bar
    with bar.phase("test decoding"):
        pass
    assert "test decoding:" in out.getvalue()
    quiet = io.StringIO()
    with TrainingProgress(2, enabled=False, console=Console(file=quiet)).phase("encoding"):
        pass
    assert quiet.getvalue() == ""
