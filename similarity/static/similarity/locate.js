// The locate page: send a photo to /api/locate/?all=1 and show every source,
// the final answer, the matched reference photos and a map.
(function () {
  "use strict";

  const form = document.getElementById("upload-form");
  const input = document.getElementById("photo-input");
  const statusLine = document.getElementById("status");
  const results = document.getElementById("results");
  const preview = document.getElementById("preview");
  const finalBox = document.getElementById("final");
  const sourcesBox = document.getElementById("sources");
  const matchesBox = document.getElementById("matches");
  const proposeButton = document.getElementById("propose");
  const proposeStatus = document.getElementById("propose-status");
  let lookedUp = null; // the photo of the last lookup, for a proposal
  const csrfToken = form.querySelector("[name=csrfmiddlewaretoken]").value;
  let map = null;
  let layers = null;

  function percent(value) {
    return value === null || value === undefined ? "–" : Math.round(value * 100) + "%";
  }
  function fmtCoord(value) {
    return Number(value).toFixed(5);
  }
  function metres(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? (value / 1000).toFixed(1) + " km" : Math.round(value) + " m";
  }
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // Leaflet writes a string tooltip with innerHTML: user text (titles) only ever goes in as a text node.
  function textContent(text) {
    return el("span", null, text);
  }
  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function ensureMap() {
    if (map) return;
    const mapNode = document.getElementById("map");
    L.Icon.Default.imagePath = mapNode.dataset.leafletImages;
    map = L.map(mapNode, { worldCopyJump: true }).setView([20, 0], 2);
    // Tiles when online; markers are drawn whether or not tiles load.
    L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      maxZoom: 19,
      attribution: "&copy; OpenStreetMap contributors",
    }).addTo(map);
    layers = L.featureGroup().addTo(map);
  }

  function drawMap(finalAnswer, matches) {
    ensureMap();
    layers.clearLayers();
    matches.forEach(function (match) {
      L.circleMarker([match.latitude, match.longitude], {
        radius: 7, color: "#2b6cdf", weight: 2, fillOpacity: 0.6, className: "match-marker",
      }).bindTooltip(textContent(match.title + " (" + percent(match.similarity) + ")")).addTo(layers);
    });
    if (finalAnswer) {
      if (finalAnswer.radius_m) {
        L.circle([finalAnswer.latitude, finalAnswer.longitude], {
          radius: finalAnswer.radius_m, color: "#1e8e3e", weight: 1, fillOpacity: 0.15, className: "radius-circle",
        }).addTo(layers);
      }
      L.circleMarker([finalAnswer.latitude, finalAnswer.longitude], {
        radius: 10, color: "#1e8e3e", weight: 3, fillOpacity: 0.9, className: "final-marker",
      }).bindTooltip(textContent("Estimate: " + finalAnswer.source)).addTo(layers);
    }
    if (layers.getLayers().length) {
      map.fitBounds(layers.getBounds().pad(0.3), { maxZoom: 16 });
    }
    setTimeout(function () { map.invalidateSize(); }, 0);
  }

  function renderFinal(finalAnswer) {
    finalBox.replaceChildren();
    finalBox.className = "final " + (finalAnswer ? "found" : "none");
    if (!finalAnswer) {
      finalBox.append(el("strong", null, "No confident answer."), el("div", null, "See each source's reason below."));
      return;
    }
    finalBox.append(
      el("div", "final-title", "Final answer: " + finalAnswer.source),
      el("div", "coords", fmtCoord(finalAnswer.latitude) + ", " + fmtCoord(finalAnswer.longitude)),
      el("div", "confidence", "Confidence " + percent(finalAnswer.confidence) + " · within about " + metres(finalAnswer.radius_m))
    );
  }

  function renderSources(sources) {
    sourcesBox.replaceChildren();
    sources.forEach(function (source) {
      const card = el("div", "source-card " + source.status);
      card.dataset.source = source.name;
      card.append(el("span", "badge", source.status.replace("_", " ")), el("div", "name", source.name));
      if (source.status === "success" && source.result) {
        card.append(el("div", "confidence", "Confidence " + percent(source.result.confidence)));
        card.append(el("div", "coords", fmtCoord(source.result.latitude) + ", " + fmtCoord(source.result.longitude)));
        if (source.result.similarity !== undefined) card.append(el("div", null, "Similarity " + percent(source.result.similarity)));
      }
      if (source.detail) card.append(el("div", "detail", source.detail));
      sourcesBox.append(card);
    });
  }

  function renderMatches(matches) {
    matchesBox.replaceChildren();
    if (!matches.length) {
      matchesBox.append(el("p", null, "No reference photos to compare with yet."));
      return;
    }
    matches.forEach(function (match) {
      const card = el("a", "match");
      card.href = match.image_url || "#";
      const image = el("img");
      image.src = match.thumbnail_url || match.image_url;
      image.alt = match.title;
      image.loading = "lazy";
      const meta = el("div", "meta");
      meta.append(el("div", "title", match.title), el("div", "similarity", "Similarity " + percent(match.similarity)));
      if (match.distance_m !== undefined && match.distance_m !== null) {
        meta.append(el("div", "distance", metres(match.distance_m) + " from the estimate"));
      }
      card.append(image, meta);
      matchesBox.append(card);
    });
  }

  function similarityMatches(sources) {
    const similarity = sources.find(function (s) { return s.result && s.result.matches; });
    return similarity ? similarity.result.matches : [];
  }

  async function readError(response) {
    try {
      const body = await response.json();
      return body.error || body.detail || response.statusText;
    } catch (e) {
      return response.status + " " + response.statusText;
    }
  }

  async function locate(file) {
    if (!file) return;
    if (!file.type.startsWith("image/") && file.type !== "") {
      setStatus("That file is not an image (" + file.type + ").", true);
      return;
    }
    setStatus("Looking for this place…");
    preview.src = URL.createObjectURL(file);
    const body = new FormData();
    body.append("image", file);
    const response = await fetch(form.dataset.locateUrl, {
      method: "POST", body: body, headers: { "X-CSRFToken": csrfToken }, credentials: "same-origin",
    });
    if (!response.ok) {
      results.hidden = true;
      setStatus(await readError(response), true);
      return;
    }
    const answer = await response.json();
    const matches = similarityMatches(answer.sources);
    lookedUp = file;
    proposeButton.hidden = !(answer.final && !answer.final.coarse);
    proposeButton.disabled = false;
    proposeStatus.textContent = "";
    results.hidden = false;
    renderFinal(answer.final);
    renderSources(answer.sources);
    renderMatches(matches);
    drawMap(answer.final, matches);
    setStatus(answer.final ? "Done." : "Done: no source is confident about this photo.");
    document.body.dataset.state = "located";
  }

  function showSearchResult(body, heading) {
    const section = body.clip_similarity;
    const matches = section.all_matches.map(function (m) {
      return Object.assign({ latitude: m.metadata.lat, longitude: m.metadata.lon }, m);
    });
    const coords = body.coordinates;
    const finalAnswer = coords && Object.assign({ source: "clip_similarity" }, coords);
    results.hidden = false;
    renderFinal(finalAnswer);
    sourcesBox.replaceChildren(el("p", null, heading));
    renderMatches(matches);
    drawMap(finalAnswer, matches);
    setStatus("Done.");
    document.body.dataset.state = "located";
  }

  // A confident lookup may be proposed as a reference photo: the server looks it up again and keeps it for review.
  async function propose() {
    if (!lookedUp) return;
    proposeButton.disabled = true;
    proposeStatus.textContent = "Proposing…";
    const body = new FormData();
    body.append("image", lookedUp);
    const response = await fetch(proposeButton.dataset.url, {
      method: "POST", body: body, headers: { "X-CSRFToken": csrfToken }, credentials: "same-origin",
    });
    if (!response.ok) {
      proposeStatus.textContent = await readError(response);
      proposeButton.disabled = false;
      return;
    }
    const answer = await response.json();
    proposeStatus.textContent = "Thank you: candidate " + answer.candidate.id + " is waiting for a curator's review.";
    document.body.dataset.proposed = String(answer.candidate.id);
  }
  proposeButton.addEventListener("click", function () { propose().catch(function (e) { proposeStatus.textContent = String(e); }); });

  input.addEventListener("change", function () { locate(input.files[0]).catch(function (e) { setStatus(String(e), true); }); });
  ["dragenter", "dragover"].forEach(function (name) {
    form.addEventListener(name, function (event) { event.preventDefault(); form.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    form.addEventListener(name, function (event) { event.preventDefault(); form.classList.remove("dragging"); });
  });
  form.addEventListener("drop", function (event) {
    const file = event.dataTransfer.files[0];
    locate(file).catch(function (e) { setStatus(String(e), true); });
  });

  const textForm = document.getElementById("text-form");
  if (textForm) {
    textForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const q = document.getElementById("text-query").value.trim();
      if (!q) return;
      setStatus("Searching…");
      const response = await fetch(textForm.dataset.textUrl + "?q=" + encodeURIComponent(q));
      if (!response.ok) { setStatus(await readError(response), true); return; }
      preview.removeAttribute("src");
      showSearchResult(await response.json(), "Text search: " + q);
    });
  }

  // /?photo=<id>: photos similar to a stored reference photo (the admin's "find similar" link).
  const photoId = new URLSearchParams(window.location.search).get("photo");
  if (photoId && /^\d+$/.test(photoId)) {
    setStatus("Finding photos similar to reference photo " + photoId + "…");
    fetch("/api/photos/" + photoId + "/").then(function (r) { return r.ok ? r.json() : null; }).then(function (photo) {
      if (photo) preview.src = photo.image_url;
    });
    fetch("/api/photos/" + photoId + "/similar/?top_k=10").then(async function (response) {
      if (!response.ok) { setStatus(await readError(response), true); return; }
      showSearchResult(await response.json(), "Reference photos similar to photo " + photoId);
    });
  }
})();
