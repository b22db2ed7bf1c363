"""The names of the interchange format (DESIGN §2) as plain data, without pydantic.

Queries need event type names (which types are master data, which belong to an order) but
not the models: importing ``ledger.events`` pulls in pydantic and builds 18 models, a cost
of a large part of a short command's start. ``ledger.events`` asserts at import that these
tuples agree with its models, so the two cannot drift apart.
"""

from __future__ import annotations

MASTER_TYPES: frozenset[str] = frozenset(
    {"ItemDefined", "ResourceDefined", "BomDefined", "RouteDefined", "ProductionParametersSet"}
)
INVENTORY_TYPES: frozenset[str] = frozenset(
    {"InventoryReceived", "InventoryTransferred", "InventoryCounted", "Picked", "Put"}
)
ORDER_TYPES: frozenset[str] = frozenset(
    {
        "OrderCreated",
        "OrderReleased",
        "OrderStarted",
        "OperationReported",
        "ReportedAsFinished",
        "MaterialConsumed",
        "OrderEnded",
    }
)
# Every event type, in the order DESIGN §2 lists them.
EVENT_TYPES: tuple[str, ...] = (
    "ItemDefined",
    "ResourceDefined",
    "BomDefined",
    "RouteDefined",
    "ProductionParametersSet",
    "InventoryReceived",
    "InventoryTransferred",
    "InventoryCounted",
    "Picked",
    "Put",
    "OrderCreated",
    "OrderReleased",
    "OrderStarted",
    "OperationReported",
    "ReportedAsFinished",
    "MaterialConsumed",
    "OrderEnded",
    "Reversal",
)
DEVICES: tuple[str, ...] = ("client", "job_terminal", "mobile", "route_card")
PRINCIPLES: tuple[str, ...] = (
    "start",
    "finish",
    "manual",
    "available_at_location",
    "operation_finish",
    "production_finish",
)
TRIGGERS: tuple[str, ...] = ("start", "operation", "finish", "put")
BASES: tuple[str, ...] = ("good", "good+error", "transferred")
TRACKING: tuple[str, ...] = ("none", "batch", "serial")


# What a replay fills in when it reads a stored payload: per event type, the fields holding
# decimals and the optional fields that default to None (``id`` excluded), and the same for
# BOM lines, route operations and flushing rules. ``ledger.events`` derives these from its
# models at import and refuses to load if they disagree, so a query can replay without
# building the models.
REPLAY_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ItemDefined": ((), ()),
    "ResourceDefined": ((), ()),
    "BomDefined": ((), ()),
    "RouteDefined": ((), ()),
    "ProductionParametersSet": (("tolerance_pct",), ("rules",)),
    "InventoryReceived": (("qty",), ("batch", "lp")),
    "InventoryTransferred": (("qty",), ("batch", "lp")),
    "InventoryCounted": (("qty",), ("batch",)),
    "Picked": (("qty",), ("order", "line", "work", "batch", "lp")),
    "Put": (("qty",), ("order", "line", "work", "batch", "lp")),
    "OrderCreated": (("qty",), ("route",)),
    "OrderReleased": ((), ()),
    "OrderStarted": (("qty",), ("qty",)),
    "OperationReported": (("good", "error", "hours"), ("hours",)),
    "ReportedAsFinished": (("good", "error"), ("location", "batch", "lp")),
    "MaterialConsumed": (("qty",), ("location", "batch", "line")),
    "OrderEnded": ((), ()),
    "Reversal": ((), ("reason",)),
}
BOM_LINE_DECIMALS: tuple[str, ...] = ("qty", "per", "scrap_pct", "scrap_const")
BOM_LINE_OPTIONAL: tuple[str, ...] = ("flushing", "operation", "location")
OPERATION_DECIMALS: tuple[str, ...] = ("setup_hours", "run_hours")
RULE_OPTIONAL: tuple[str, ...] = ("resource",)

