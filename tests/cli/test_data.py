"""``omniflex data tokenize``: the task balance it prints."""

from omniflex.cli.data import balance_table


def test_data_tokenize_prints_the_task_balance():
    table = balance_table({
        "asr": {"text": 100, "audio": 0, "image": 0, "special": 20},
        "tts": {"text": 30, "audio": 900, "image": 0, "special": 40},
    })  # fmt: skip
    lines = table.splitlines()
    assert lines[2].split() == ["tts", "30", "900", "0", "40", "89.0%"]  # largest first
    assert lines[3].split()[-1] == "11.0%"
