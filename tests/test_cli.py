from fokkerplanck import cli
from fokkerplanck.verify import CHECKS


def test_verify_energies_passes(capsys):
    assert cli.main(["verify", "--quick", "--only", "energies"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out


def test_verify_unknown_check():
    assert cli.main(["verify", "--only", "nope"]) == 2


def test_checks_registered():
    assert "energies" in CHECKS
