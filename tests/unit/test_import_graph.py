"""The project's rooms depend one way (STYLE.md): shared <- services, shared <- infra <- ops <-
console <- local, and no module imports itself back through others. Read from the source by
grimp, so a backward or circular import anywhere fails here, lazy imports inside functions
included."""

from __future__ import annotations

import grimp
import networkx as nx
import pytest

# Each room may import the rooms below it: services and infra sit side by side on shared, and
# the embedded stack (local) may run the services it hosts.
MAY_IMPORT = {
    "shared": set(),
    "services": {"shared"},
    "infra": {"shared"},
    "ops": {"shared", "infra"},
    "console": {"shared", "infra", "ops"},
    "local": {"shared", "infra", "ops", "console", "services"},
}


@pytest.fixture(scope="module")
def imports() -> nx.DiGraph:
    graph = grimp.build_graph(*MAY_IMPORT, include_external_packages=False)
    edges = nx.DiGraph()
    for module in graph.modules:
        edges.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            edges.add_edge(module, imported)
    return edges


def room(module: str) -> str:
    return module.split(".", 1)[0]


def test_every_room_imports_only_the_rooms_below_it(imports: nx.DiGraph) -> None:
    backward = sorted(
        f"{importer} imports {imported}"
        for importer, imported in imports.edges
        if room(importer) != room(imported) and room(imported) not in MAY_IMPORT[room(importer)]
    )
    assert backward == []


def test_no_module_imports_itself_back_through_others(imports: nx.DiGraph) -> None:
    cycles = sorted(
        " <-> ".join(sorted(component))
        for component in nx.strongly_connected_components(imports)
        if len(component) > 1
    )
    assert cycles == []


def test_the_graph_is_read_from_the_source(imports: nx.DiGraph) -> None:
    # (a graph that lost its modules would pass the rules above vacuously)
    assert imports.has_edge("ops.cli", "infra.resources")
    assert imports.has_edge("local.commands", "ops.cli")
    assert {room(module) for module in imports} == set(MAY_IMPORT)
