"""dissect.engine._activations.check_finite: every NaN/inf is found (one reduction first), named by layer,
unit and index.csv row; finite values of any size pass."""
from __future__ import annotations

import pytest
import torch

from broden_builder import BrodenStore
from dissect.engine._activations import check_finite
from dissect.errors import DissectError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("bad,kind", [(float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "inf")])
def test_one_bad_value_anywhere_is_named(synthetic_store, dtype, bad, kind):
    store = BrodenStore(synthetic_store)
    rows = [3, 9, 4]
    for b, u, y, x in [(0, 0, 0, 0), (2, 4, 1, 2), (1, 3, 2, 0)]:
        a = torch.randn(3, 5, 3, 4).to(dtype) * 100
        a[b, u, y, x] = bad
        with pytest.raises(DissectError) as e:
            check_finite("L", a, rows, store)
        msg = str(e.value)
        assert f"unit {u} (0-based) has {kind}" in msg and f"index.csv row {rows[b] + 1}" in msg, msg


def test_finite_values_pass(synthetic_store):
    store = BrodenStore(synthetic_store)
    big = torch.full((2, 3, 2, 2), 3.0e38)
    big[0, 0, 0, 0] = -3.0e38  # finite extremes (their sum would overflow)
    check_finite("L", big, [0, 1], store)
    check_finite("L", torch.full((2, 3, 2, 2), 65504.0, dtype=torch.float16), [0, 1], store)
    check_finite("L", torch.empty(0, 3, 2, 2), [], store)
