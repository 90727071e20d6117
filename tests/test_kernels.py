"""The table footer's claim about MKL: which CNR branch a MKL_CBWR setting really runs per CPU vendor."""

import pytest

from barkit.kernels import mkl_branch


@pytest.mark.parametrize(("setting", "vendor", "branch"), [
    ("AVX2", "GenuineIntel", "AVX2"),
    ("AVX2", "AuthenticAMD", "AUTO"),  # Intel-only branches fall back to AUTO, silently
    ("BRANCH=AVX2,STRICT", "AuthenticAMD", "AUTO"),
    ("avx512", "HygonGenuine", "AUTO"),
    ("COMPATIBLE", "AuthenticAMD", "COMPATIBLE"),  # the vendor-independent branch
    ("COMPATIBLE,STRICT", "GenuineIntel", "COMPATIBLE"),
    ("AUTO", "GenuineIntel", "AUTO"),
    ("unset", "AuthenticAMD", "UNSET"),
])
def test_mkl_branch_follows_intels_rule(setting, vendor, branch):
    assert mkl_branch(setting, vendor) == branch
