from pathlib import Path

import pytest

from services.core.datasets import load_registry
from services.core.errors import InvalidInput, NotFound, SettingsError
from services.core.settings import Settings


@pytest.fixture
def records():  # type: ignore[no-untyped-def]
    return load_registry(Settings().datasets_dir).get("bookkeeping_records")


def test_bookkeeping_records_ships_with_presets_and_a_computed_profit(records) -> None:  # type: ignore[no-untyped-def]
    assert set(records.presets) == {"essential", "financial", "all"}
    profit = records.field("profit")
    assert profit.computed
    assert profit.type == "money"
    assert "profit" not in [f.name for f in records.importable]
    assert records.field("sale_price").column == "sale_price_cents"
    assert records.field("status").values == [
        "paid",
        "shipped",
        "delivered",
        "cancelled",
        "refunded",
    ]
    assert {f.name for f in records.fields if f.required} == {
        "ebay_order_id",
        "sale_date",
        "item_name",
        "sale_price",
    }


def test_marketplace_report_headers_are_aliases(records) -> None:  # type: ignore[no-untyped-def]
    aliases = {a for f in records.fields for a in f.aliases}
    for header in (
        "order number",
        "sale date",
        "item title",
        "quantity",
        "sold for",
        "order status",
    ):
        assert header in aliases


def test_columns_come_from_a_preset_or_an_explicit_list(records) -> None:  # type: ignore[no-untyped-def]
    assert [f.name for f in records.columns_for(columns=None, preset="essential")] == [
        "ebay_order_id",
        "sale_date",
        "item_name",
        "sale_price",
        "status",
    ]
    assert [f.name for f in records.columns_for(columns=["qty", "profit"], preset=None)] == [
        "qty",
        "profit",
    ]
    assert len(records.columns_for(columns=None, preset=None)) == len(records.fields)


def test_unknown_columns_and_presets_name_the_field(records) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        records.columns_for(columns=["qty", "colour"], preset=None)
    assert caught.value.errors == [{"field": "columns", "message": "unknown column 'colour'"}]
    with pytest.raises(InvalidInput, match="unknown preset 'everything'"):
        records.columns_for(columns=None, preset="everything")


def test_unknown_dataset_is_not_found() -> None:
    with pytest.raises(NotFound):
        load_registry(Settings().datasets_dir).get("invoices")


def test_a_preset_naming_a_missing_field_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(
        'name = "x"\nlabel = "X"\ntable = "x"\n[presets]\nall = ["nope"]\n'
        '[[fields]]\nname = "a"\nlabel = "A"\ntype = "text"\n'
    )
    with pytest.raises(SettingsError, match="preset all names 'nope'"):
        load_registry(tmp_path)


def test_a_typo_in_a_dataset_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(
        'name = "x"\nlabel = "X"\ntable = "x"\n[[fields]]\nname = "a"\nlabel = "A"\ntype = "txt"\n'
    )
    with pytest.raises(SettingsError, match=r"x\.toml"):
        load_registry(tmp_path)
