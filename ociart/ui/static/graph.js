// Pan (drag) and zoom (wheel) for the lineage SVG. Static: reads nothing but the SVG's own viewBox.
(function () {
  "use strict";
  var svg = document.getElementById("lineage");
  if (!svg) { return; }
  var vb = svg.viewBox.baseVal;
  var start = null;
  function scale() { var r = svg.getBoundingClientRect(); return r.width ? vb.width / r.width : 1; }
  svg.addEventListener("wheel", function (e) {
    e.preventDefault();
    var r = svg.getBoundingClientRect();
    var k = e.deltaY > 0 ? 1.15 : 1 / 1.15;
    var px = vb.x + (e.clientX - r.left) * vb.width / r.width;
    var py = vb.y + (e.clientY - r.top) * vb.height / r.height;
    vb.x = px - (px - vb.x) * k; vb.y = py - (py - vb.y) * k;
    vb.width *= k; vb.height *= k;
  }, { passive: false });
  svg.addEventListener("pointerdown", function (e) {
    if (e.target.closest && e.target.closest("a")) { return; }
    start = { x: e.clientX, y: e.clientY, vx: vb.x, vy: vb.y, s: scale() };
    svg.setPointerCapture(e.pointerId);
  });
  svg.addEventListener("pointermove", function (e) {
    if (!start) { return; }
    vb.x = start.vx - (e.clientX - start.x) * start.s;
    vb.y = start.vy - (e.clientY - start.y) * start.s;
  });
  svg.addEventListener("pointerup", function () { start = null; });
}());
