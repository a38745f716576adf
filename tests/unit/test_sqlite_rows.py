"""Multi-row SQLite statements (``ledger.persistence.sqlite_rows``): every row in exactly one
statement, in order, in few statements, none over the parameter limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.persistence.sqlite_rows import CHUNKS, MAX_PARAMETERS, chunks, in_list, values


@given(count=st.integers(0, 5000), width=st.integers(1, 40))
def test_every_row_is_in_exactly_one_statement_in_order(count: int, width: int) -> None:
    covered = [
        index for start, size in chunks(count, width) for index in range(start, start + size)
    ]
    assert covered == list(range(count))


@given(count=st.integers(0, 5000), width=st.integers(1, 2000))
def test_no_statement_carries_more_parameters_than_sqlite_allows(count: int, width: int) -> None:
    assert all(size * width <= MAX_PARAMETERS for _, size in chunks(count, width))


@given(count=st.integers(0, 5000))
def test_rows_take_at_most_one_statement_per_512_and_one_per_bit_of_the_rest(count: int) -> None:
    assert len(list(chunks(count, 4))) <= count // 512 + 9


def test_hundreds_of_rows_take_a_few_statements() -> None:
    sizes = [size for _, size in chunks(700, 4)]
    assert len(sizes) <= 10
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == max(size for size in CHUNKS if size * 4 <= MAX_PARAMETERS)


def test_values_and_in_lists_have_one_placeholder_per_parameter() -> None:
    assert values(2, 3) == "(?, ?, ?), (?, ?, ?)"
    assert values(1, 2, "%s") == "(%s, %s)"
    assert in_list(3) == "(?, ?, ?)"
