// The curators' coverage map: photo counts per grid cell, fetched for the area shown
// (/api/coverage/), and a cell's photos on a click (/api/coverage/cell/). Text goes in as text only.
(function () {
  "use strict";
  const root = document.querySelector(".coverage");
  const filters = root.querySelector(".coverage-filters");
  const total = root.querySelector(".coverage-total");
  const panel = document.getElementById("coverage-cell");
  L.Icon.Default.imagePath = root.dataset.leafletImages;
  // ?lat=..&lon=..&zoom=.. opens the map on an area (a link a curator can share)
  const asked = new URLSearchParams(window.location.search);
  function number(name, fallback, low, high) {
    const value = parseFloat(asked.get(name));
    return Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : fallback;
  }
  const map = L.map("coverage-map").setView([number("lat", 30, -85, 85), number("lon", 10, -180, 180)],
                                            Math.round(number("zoom", 2, 0, 18)));
  L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
    maxZoom: 19, attribution: "&copy; OpenStreetMap contributors",
  }).addTo(map);
  const cells = L.featureGroup().addTo(map);
  let latest = 0;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function wrap(longitude) { return ((longitude + 180) % 360 + 360) % 360 - 180; }
  function shownArea() {
    const bounds = map.getBounds();
    const south = Math.max(-85, bounds.getSouth()), north = Math.min(85, bounds.getNorth());
    if (bounds.getEast() - bounds.getWest() >= 360) return [south, -180, north, 180];
    return [south, wrap(bounds.getWest()), north, wrap(bounds.getEast())];
  }
  function query(extra) {
    const form = new FormData(filters);
    return new URLSearchParams(Object.assign({ state: form.get("state"), active: form.get("active") }, extra));
  }
  async function readError(response) {
    try { return (await response.json()).error; } catch (e) { return response.status + " " + response.statusText; }
  }

  async function refresh() {
    const mine = ++latest;
    root.dataset.state = "loading";
    const response = await fetch(root.dataset.cellsUrl + "?" + query({ zoom: map.getZoom(), bbox: shownArea().join(",") }));
    if (mine !== latest) return; // a newer view superseded this one
    if (!response.ok) { total.textContent = await readError(response); return; }
    const answer = await response.json();
    const largest = Math.max(1, ...answer.features.map(function (feature) { return feature.properties.count; }));
    cells.clearLayers();
    L.geoJSON(answer, {
      style: function (feature) {
        const share = Math.sqrt(feature.properties.count / largest);
        return { color: "#2b6cdf", weight: 1, fillOpacity: 0.15 + 0.55 * share, className: "coverage-cell-area" };
      },
      onEachFeature: function (feature, layer) {
        layer.bindTooltip(el("span", null, String(feature.properties.count)), {
          permanent: true, direction: "center", className: "coverage-count",
        });
        layer.on("click", function () { showCell(feature.properties).catch(function (e) { panel.textContent = String(e); }); });
      },
    }).addTo(cells);
    total.textContent = answer.total + " photo(s) in the area shown";
    root.dataset.cellZoom = String(answer.cell_zoom);
    root.dataset.state = "drawn";
  }

  async function showCell(cell) {
    panel.replaceChildren(el("p", null, "Loading…"));
    const response = await fetch(root.dataset.cellUrl + "?" + query({ zoom: cell.zoom, x: cell.x, y: cell.y }));
    if (!response.ok) { panel.replaceChildren(el("p", null, await readError(response))); return; }
    const answer = await response.json();
    const list = el("ul", "coverage-photos");
    answer.photos.forEach(function (photo) {
      const item = el("li");
      const link = el("a", null, photo.title);
      link.href = photo.admin_url;
      if (photo.thumbnail_url) {
        const image = el("img");
        image.src = photo.thumbnail_url;
        image.alt = "";
        item.append(image);
      }
      item.append(link, el("span", "state", " " + photo.embedding_status + (photo.is_active ? "" : ", inactive")));
      list.append(item);
    });
    const heading = answer.count + " photo(s) in this cell" + (answer.count > answer.photos.length ? ", the first " + answer.photos.length + ":" : ":");
    panel.replaceChildren(el("p", null, heading), list);
    root.dataset.cellShown = String(answer.count);
  }

  map.on("moveend", function () { refresh().catch(function (e) { total.textContent = String(e); }); });
  filters.addEventListener("change", function () { refresh().catch(function (e) { total.textContent = String(e); }); });
  refresh().catch(function (e) { total.textContent = String(e); });
})();
