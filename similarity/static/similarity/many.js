// Several photos at once on the locate page: each is sent to /api/locate/ in turn (the same request, budget and
// answer as one photo); a list shows each photo's progress and answer, a map all the estimates, and the rows
// download as CSV or GeoJSON with the columns of `manage.py locate_photos` and /api/batches/.
// locate.js calls window.geolocatorMany.locate(files) when more than one photo is chosen or dropped; page.js
// holds what the two share.
(function () {
  "use strict";

  const el = window.geolocatorPage.el;
  const worldMap = window.geolocatorPage.worldMap;
  const readError = window.geolocatorPage.readError;
  const COLUMNS = ["file", "latitude", "longitude", "radius_m", "confidence", "source", "method", "matched_ids", "reason"];
  const FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"]; // a spreadsheet would run such a cell: written as text
  const section = document.getElementById("many");
  const list = document.getElementById("many-list");
  const summary = document.getElementById("many-summary");
  const csvLink = document.getElementById("download-csv");
  const geojsonLink = document.getElementById("download-geojson");
  const form = document.getElementById("upload-form");
  const csrfToken = form.querySelector("[name=csrfmiddlewaretoken]").value;
  let map = null;
  let markers = null;
  let rows = [];
  let running = false;

  function ensureMap() {
    if (map) return;
    map = worldMap(document.getElementById("many-map"));
    markers = L.featureGroup().addTo(map);
  }

  // The row of one answer, as locate/batch.py's row_from_outcome writes it.
  function rowOf(name, answer) {
    const similarity = answer.sources.find(function (s) { return s.result && s.result.matches; });
    const row = {
      file: name, latitude: null, longitude: null, radius_m: null, confidence: null, source: null, method: null,
      matched_ids: similarity ? similarity.result.matches.map(function (m) { return m.id; }) : [], reason: null,
    };
    const final = answer.final;
    if (!final) {
      row.reason = answer.sources.filter(function (s) { return s.detail; })
        .map(function (s) { return s.name + ": " + s.detail; }).join("; ");
      return row;
    }
    const answering = answer.sources.find(function (s) { return s.name === final.source; });
    return Object.assign(row, {
      latitude: final.latitude, longitude: final.longitude, radius_m: final.radius_m, confidence: final.confidence,
      source: final.source, method: (answering && answering.result && answering.result.method) || final.source,
    });
  }

  function csvCell(column, value) {
    if (value === null || value === undefined) return "";
    let text = column === "matched_ids" ? value.join(" ") : String(value);
    if (column !== "matched_ids" && typeof value === "string" && (FORMULA_STARTS.some(function (s) { return text.startsWith(s); }) || text.startsWith("'"))) {
      text = "'" + text;
    }
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function refreshDownloads() {
    const csv = [COLUMNS.join(",")].concat(rows.map(function (row) {
      return COLUMNS.map(function (column) { return csvCell(column, row[column]); }).join(",");
    })).join("\n") + "\n";
    const geojson = {
      type: "FeatureCollection",
      features: rows.map(function (row) {
        const properties = {};
        COLUMNS.forEach(function (c) { if (c !== "latitude" && c !== "longitude") properties[c] = row[c]; });
        const point = row.latitude === null ? null : { type: "Point", coordinates: [row.longitude, row.latitude] };
        return { type: "Feature", geometry: point, properties: properties };
      }),
    };
    [[csvLink, csv, "text/csv"], [geojsonLink, JSON.stringify(geojson), "application/geo+json"]].forEach(function (entry) {
      if (entry[0].href.startsWith("blob:")) URL.revokeObjectURL(entry[0].href);
      entry[0].href = URL.createObjectURL(new Blob([entry[1]], { type: entry[2] }));
    });
    csvLink.hidden = geojsonLink.hidden = !rows.length;
  }

  function showAnswer(item, row) {
    const answer = item.querySelector(".answer");
    item.className = "many-item " + (row.latitude === null ? "none" : "found");
    if (row.latitude === null) {
      answer.textContent = "No answer: " + (row.reason || "no source is confident.");
      return;
    }
    answer.textContent = row.latitude.toFixed(5) + ", " + row.longitude.toFixed(5) + " · " + row.source +
      " · confidence " + Math.round(row.confidence * 100) + "%";
    const marker = L.circleMarker([row.latitude, row.longitude], {
      radius: 8, color: "#1e8e3e", weight: 2, fillOpacity: 0.8, className: "many-marker",
    });
    marker.bindTooltip(el("span", null, row.file)); // a file name is text, never markup
    marker.addTo(markers);
    map.invalidateSize();
    map.fitBounds(markers.getBounds().pad(0.3), { maxZoom: 16, animate: false });
  }

  async function locateOne(file, item) {
    item.querySelector(".state").textContent = "locating…";
    const body = new FormData();
    body.append("image", file);
    const response = await fetch(form.dataset.locateManyUrl, {
      method: "POST", body: body, headers: { "X-CSRFToken": csrfToken }, credentials: "same-origin",
    });
    if (!response.ok) {
      item.className = "many-item failed";
      item.querySelector(".state").textContent = "refused";
      item.querySelector(".answer").textContent = await readError(response);
      return;
    }
    const row = rowOf(file.name, await response.json());
    rows.push(row);
    item.querySelector(".state").textContent = "done";
    showAnswer(item, row);
    refreshDownloads();
  }

  async function locate(files) {
    if (running) return;
    running = true;
    rows = [];
    section.hidden = false;
    document.getElementById("results").hidden = true;
    ensureMap();
    markers.clearLayers();
    setTimeout(function () { map.invalidateSize(); }, 0);
    list.replaceChildren();
    refreshDownloads();
    const items = Array.from(files).map(function (file) {
      const item = el("li", "many-item waiting");
      item.append(el("span", "name", file.name), el("span", "state", "waiting"), el("div", "answer"));
      list.append(item);
      return item;
    });
    for (let i = 0; i < files.length; i++) {
      summary.textContent = "Locating photo " + (i + 1) + " of " + files.length + "…";
      try {
        await locateOne(files[i], items[i]);
      } catch (e) {
        items[i].className = "many-item failed";
        items[i].querySelector(".answer").textContent = String(e);
      }
    }
    const found = rows.filter(function (row) { return row.latitude !== null; }).length;
    summary.textContent = "Done: " + found + " of " + files.length + " photos located.";
    document.body.dataset.state = "located-many";
    running = false;
  }

  window.geolocatorMany = { locate: locate };
})();
