"""Lineage graph layout on the server: grandalf's Sugiyama layering, left to right, drawn as SVG by a template.

Why grandalf on the server rather than a JavaScript library in the browser: the page then carries no script that
takes data (the strict Content-Security-Policy stays ``script-src 'self'`` with one static file for pan and zoom),
every node is a plain ``<a>`` link that works without JavaScript, the drawing is the same in every browser and in
the tests, and nothing has to be bundled from npm into the wheel. grandalf is pure Python (one small dependency,
no compiled code); lineage graphs are DAGs, which is what a layered (Sugiyama) layout is for. See
``benchmarks/ui.py`` for the time a 500-node graph takes.
"""

from __future__ import annotations

from itertools import pairwise

from pydantic import BaseModel

from .service import GraphNode, LineageGraph

NODE_W, NODE_H = 200.0, 58.0
GAP_X, GAP_Y = 90.0, 24.0
MARGIN = 20.0


class _View:
    """grandalf's view protocol: a box size, then the position it chose."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy = (0.0, 0.0)


class _EdgeView:
    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, pts: list[tuple[float, float]]) -> None:
        self.points = [(float(x), float(y)) for x, y in pts]


class PlacedNode(BaseModel):
    node: GraphNode
    x: float
    y: float
    w: float = NODE_W
    h: float = NODE_H


class PlacedEdge(BaseModel):
    source: str
    target: str
    #: SVG path data
    d: str


class Drawing(BaseModel):
    width: float
    height: float
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]


def layout(graph: LineageGraph) -> Drawing:
    """Place every node (left: inputs, right: what was built from them) and route every edge."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout

    vertices = {n.id: Vertex(n.id) for n in graph.nodes}
    for v in vertices.values():
        v.view = _View(NODE_H + GAP_Y, NODE_W + GAP_X)  # laid out top-down, then turned: w<->h swapped
    edges = []
    for e in graph.edges:
        if e.source == e.target:
            continue
        edge = Edge(vertices[e.source], vertices[e.target])
        edge.view = _EdgeView()
        edges.append(edge)
    g = Graph(list(vertices.values()), edges)
    offset = 0.0  # components are stacked vertically
    placed: dict[str, tuple[float, float]] = {}
    routes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for component in g.C:
        sug = SugiyamaLayout(component)
        sug.init_all()
        sug.draw(2)
        xs = [v.view.xy[0] for v in component.sV]
        lo = min(xs) - NODE_H / 2
        for v in component.sV:
            x, y = v.view.xy
            placed[v.data] = (y, x - lo + offset)
        for e in component.sE:
            pts = e.view.points or [e.v[0].view.xy, e.v[1].view.xy]
            routes[(e.v[0].data, e.v[1].data)] = [(py, px - lo + offset) for px, py in pts]
        offset += max(xs) - min(xs) + NODE_H + GAP_Y * 2
    min_x = min((p[0] for p in placed.values()), default=0.0) - NODE_W / 2
    min_y = min((p[1] for p in placed.values()), default=0.0) - NODE_H / 2
    nodes = []
    for n in graph.nodes:
        cx, cy = placed[n.id]
        nodes.append(PlacedNode(node=n, x=cx - NODE_W / 2 - min_x + MARGIN, y=cy - NODE_H / 2 - min_y + MARGIN))
    out_edges = []
    for (a, b), pts in routes.items():
        shifted = [(x - min_x + MARGIN, y - min_y + MARGIN) for x, y in pts]
        # from the right side of the input's box to the left side of the consumer's
        (x0, y0), (x1, y1) = shifted[0], shifted[-1]
        shifted[0] = (x0 + NODE_W / 2, y0)
        shifted[-1] = (x1 - NODE_W / 2 - 4, y1)
        out_edges.append(PlacedEdge(source=a, target=b, d=_path(shifted)))
    width = max((n.x + n.w for n in nodes), default=0.0) + MARGIN
    height = max((n.y + n.h for n in nodes), default=0.0) + MARGIN
    return Drawing(width=width, height=height, nodes=nodes, edges=out_edges)


def _path(pts: list[tuple[float, float]]) -> str:
    """A smooth path through the points: horizontal tangents at each end (cubic Bézier per segment)."""
    parts = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
    for (x0, y0), (x1, y1) in pairwise(pts):
        mx = (x0 + x1) / 2
        parts.append(f"C{mx:.1f},{y0:.1f} {mx:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
    return " ".join(parts)
