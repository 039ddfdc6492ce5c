"""``signbart compare``: two sweeps paired cell by cell, refusing pairs that are not fair."""

import pandas as pd
import pytest
from report_rows import VARIANTS, write_sweep

from signbart.cli import main
from signbart.compare import compare
from signbart.errors import UserError

HOLDOUTS = ["user01", "user02", "user03"]


def _inner(holdout, seed):
    return [s for s in ("user04", "user05", "user06") if s != holdout][:2] + [f"s{seed}"]


@pytest.fixture
def published(tmp_path):
    return write_sweep(tmp_path, "published", HOLDOUTS, seeds=(42, 43), variants=VARIANTS[:1],
                       val_signers=_inner)


def test_a_screen_pairs_with_the_published_cells_of_its_seed(tmp_path, published):
    # VARIANT_SHIFT: the second variant is +1 point held out and -0.3 points inner everywhere
    screen = write_sweep(tmp_path, "screen", HOLDOUTS, seeds=(42,), variants=VARIANTS[1:],
                         val_signers=_inner)
    table = compare(str(published), str(screen)).set_index(["quant", "model_kind"])
    assert len(table) == 7
    qat = table.loc[("qat", "signbart")]
    assert (qat.signers, qat.cells) == (3, 3)          # seed 43 has no partner
    assert qat.held_out_delta == pytest.approx(0.01)
    assert qat.inner_delta == pytest.approx(-0.003)
    assert (qat.signers_better, qat.signers_worse) == (3, 0)
    # A's side is its seed-42 cells only: seed 43's noise (+1 point) stays out of the mean
    assert qat.held_out_a == pytest.approx((0.79 + 0.81 + 0.83) / 3)


def test_cells_on_other_inner_signers_are_refused_by_name(tmp_path, published):
    screen = write_sweep(tmp_path, "screen", HOLDOUTS, seeds=(42,), variants=VARIANTS[1:],
                         val_signers=lambda h, s: ["user09", "user11"])
    with pytest.raises(UserError, match=r"holdout user01, seed 42, .*inner signers"):
        compare(str(published), str(screen))


def test_a_side_of_several_variants_needs_one_named(tmp_path, published):
    both = write_sweep(tmp_path, "both", HOLDOUTS, seeds=(42,), val_signers=_inner)
    with pytest.raises(UserError, match="--b-variant"):
        compare(str(published), str(both))
    with pytest.raises(UserError, match="no variant 'nope'"):
        compare(str(published), str(both), b_variant="nope")
    table = compare(str(published), str(both), b_variant=VARIANTS[0])
    assert (table.held_out_delta == 0).all() and (table.signers_better == 0).all()


def test_sweeps_with_no_cell_in_common_are_refused(tmp_path, published):
    other = write_sweep(tmp_path, "other", ["user07"], variants=VARIANTS[:1])
    with pytest.raises(UserError, match="share no cell"):
        compare(str(published), str(other))


def test_the_command_prints_the_table_and_writes_it(tmp_path, published, capsys):
    screen = write_sweep(tmp_path, "screen", HOLDOUTS, seeds=(42,), variants=VARIANTS[1:],
                         val_signers=_inner)
    out = tmp_path / "cmp" / "compare.csv"
    assert main(["compare", str(published), str(screen), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| qat signbart | 3 | 86.0 | 85.7 | -0.3 [-0.3, -0.3] |" in printed
    assert (tmp_path / "cmp" / "compare.md").read_text() == printed
    assert len(pd.read_csv(out)) == 7
    assert main(["compare", str(published), str(tmp_path / "missing")]) == 2
