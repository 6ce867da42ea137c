"""Column mapping: which file column Ferry proposes for each field, and the user's say over it."""

from __future__ import annotations

import pytest

from services.core.datasets import load_registry
from services.core.errors import InvalidInput
from services.core.imports import mapping
from services.core.imports.mapping import Match
from services.core.settings import Settings

DS = load_registry(Settings().datasets_dir).get("bookkeeping_records")


def fields(m: mapping.Mapping) -> dict[str, str | None]:
    return mapping.mapping_choices(m)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Order #", Match("ebay_order_id", 1.0, "alias")),
        ("  SOLD ON ", Match("sale_date", 1.0, "alias")),
        ("ebay_order_id", Match("ebay_order_id", 1.0, "field name")),
        ("Order#", Match("ebay_order_id", 0.9, "normalised name")),
        ("OrderNumber", Match("ebay_order_id", 0.9, "normalised name")),
        ("Dáte", Match("sale_date", 0.9, "normalised name")),
        ("SALE-DATE", Match("sale_date", 0.9, "normalised name")),
        ("Sale Price Cents", Match("sale_price", 1.0, "alias", "cents")),
        ("Fees (cents)", Match("fees", 0.9, "normalised name", "cents")),
        ("fees_in_cents", Match("fees", 0.9, "normalised name", "cents")),
        ("Zebra", None),
    ],
)
def test_one_column_is_matched_by_its_best_evidence(header: str, expected: Match | None) -> None:
    assert mapping.suggest([header], DS)[header] == expected


@pytest.mark.parametrize(
    ("spaced", "others"),
    [
        ("Order ID", ["order_id", "orderId", "OrderID", "ORDER_ID"]),
        ("Created At", ["created_at", "createdAt", "CreatedAt"]),
        ("Sale Price USD", ["sale_price_usd", "salePriceUSD", "SalePrice (USD)"]),
        ("Item Title", ["item_title", "itemTitle"]),
        ("Shipping Cost", ["shipping_cost", "shippingCost"]),
        ("Order Status", ["order_status", "orderStatus"]),
    ],
)
def test_snake_and_camel_case_headers_reach_the_spaced_forms_suggestion(
    spaced: str, others: list[str]
) -> None:
    expected = mapping.suggest([spaced], DS)[spaced]
    assert expected is not None
    for header in others:
        found = mapping.suggest([header], DS)[header]
        assert found is not None, header
        assert (found.field, found.unit) == (expected.field, expected.unit), header


def test_a_date_header_is_never_guessed_to_be_another_kind_of_field() -> None:
    m = mapping.suggest(["Date", "Sale Date", "Title", "Price"], DS)
    assert fields(m) == {
        "Date": "sale_date",
        "Sale Date": None,  # not 'status' by its likeness to 'sale status'
        "Title": "item_name",
        "Price": "sale_price",
    }


def test_each_field_takes_one_column_the_first_of_equals() -> None:
    m = mapping.suggest(["Sale Date", "Date", "Price", "Sale Price"], DS)
    assert fields(m) == {
        "Sale Date": "sale_date",
        "Date": None,
        "Price": "sale_price",
        "Sale Price": None,
    }


def test_the_columns_of_an_error_report_are_never_mapped() -> None:
    m = mapping.suggest(["Order", "_row", "_errors", "_ROW"], DS)
    assert fields(m) == {"Order": "ebay_order_id", "_row": None, "_errors": None, "_ROW": None}


def test_a_remembered_mapping_replaces_the_guesswork() -> None:
    headers = ["Ref", "When", "Order", "Total cents", "Old"]
    remembered = {
        "Ref": "ebay_order_id",
        "When": "sale_date",
        "Total cents": "sale_price",
        "Old": "profit",  # computed, not importable (any more): left unmapped
    }
    m = mapping.suggest(headers, DS, remembered)
    assert m["Ref"] == Match("ebay_order_id", 1.0, "remembered")
    assert m["Total cents"] == Match("sale_price", 1.0, "remembered", "cents")
    # Columns the user left unmapped last time stay so, even one that looks like a field.
    assert m["Order"] is None
    assert m["Old"] is None


def test_a_remembered_field_is_taken_once() -> None:
    m = mapping.suggest(["A", "B"], DS, {"A": "item_name", "B": "item_name"})
    assert fields(m) == {"A": "item_name", "B": None}


def test_a_choice_moves_a_field_from_the_column_it_was_suggested_for() -> None:
    suggested = mapping.suggest(["Order", "Item", "Reference", "Fees"], DS)
    assert fields(suggested)["Order"] == "ebay_order_id"
    chosen = mapping.apply_choices(
        suggested, {"Reference": "ebay_order_id", "Fees": None, "Missing": "qty"}, DS
    )
    assert fields(chosen) == {
        "Order": None,
        "Item": "item_name",
        "Reference": "ebay_order_id",
        "Fees": None,
    }
    assert chosen["Reference"] == Match("ebay_order_id", 1.0, "chosen")


def test_a_chosen_money_column_named_in_cents_is_read_as_cents() -> None:
    chosen = mapping.apply_choices(mapping.suggest(["net_cents"], DS), {"net_cents": "cost"}, DS)
    assert chosen["net_cents"] == Match("cost", 1.0, "chosen", "cents")


def test_required_fields_left_unmapped_are_listed_in_field_order() -> None:
    m = mapping.suggest(["Price", "Qty", "Title"], DS)
    assert mapping.unmapped_required(m, DS) == ["ebay_order_id", "sale_date"]
    full = mapping.suggest(["Order", "Date", "Title", "Price"], DS)
    assert mapping.unmapped_required(full, DS) == []


def test_header_keys_skip_report_columns_and_spaces_but_not_the_dataset() -> None:
    key = mapping.header_key("bookkeeping_records", ["Order", "Price"])
    # A fixed error report (with _row, _errors) is remembered like the file it came from.
    assert key == mapping.header_key("bookkeeping_records", [" order", "Price ", "_row", "_errors"])
    assert key != mapping.header_key("other_dataset", ["Order", "Price"])


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ({"Nope": "qty"}, "Nope: no such column in the file"),
        ({"Price": "profit"}, "Price: 'profit' is not an importable field of bookkeeping_records"),
        ({"Price": 3}, "Price: 3 is not an importable field of bookkeeping_records"),
        (
            {"Price": "sale_price", "Total": "sale_price"},
            "Total: sale_price is already mapped from 'Price'",
        ),
        ([], "send a JSON object of {source column: field or null}"),
    ],
)
def test_bad_choices_are_refused_naming_the_column(choices: object, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        mapping.check_choices(choices, ["Price", "Total"], DS)
    assert str(refused.value) == message


def test_good_choices_pass_and_null_unmaps() -> None:
    choices = {"Price": "sale_price", "Total": None}
    assert mapping.check_choices(choices, ["Price", "Total"], DS) == choices


def test_the_stored_document_gives_back_the_choices() -> None:
    m = mapping.suggest(["Order", "Sale Price Cents", "Zebra"], DS)
    doc = mapping.mapping_document(m)
    assert doc["Sale Price Cents"] == {
        "field": "sale_price",
        "confidence": 1.0,
        "reason": "alias",
        "unit": "cents",
    }
    assert doc["Zebra"] is None
    assert mapping.document_choices(doc) == mapping.mapping_choices(m)
    assert mapping.document_choices(None) == {}
