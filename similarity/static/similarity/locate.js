// The locate page: send a photo to /api/locate/?all=1 and show every source,
// the final answer, the matched reference photos and a map.
(function () {
  "use strict";

  const el = window.geolocatorPage.el;
  const readError = window.geolocatorPage.readError;
  const form = document.getElementById("upload-form");
  const input = document.getElementById("photo-input");
  const statusLine = document.getElementById("status");
  const results = document.getElementById("results");
  const preview = document.getElementById("preview");
  const finalBox = document.getElementById("final");
  const sourcesBox = document.getElementById("sources");
  const matchesBox = document.getElementById("matches");
  const proofBox = document.getElementById("proof");
  const PROOFS_SHOWN = 3; // verified matches whose correspondences are drawn
  const proposeButton = document.getElementById("propose");
  const proposeStatus = document.getElementById("propose-status");
  let lookedUp = null; // the photo of the last lookup, for a proposal
  let queryImageUrl = null; // the query photo, for drawing correspondences
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
    map = window.geolocatorPage.worldMap(document.getElementById("map"));
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
      if (match.verified) meta.append(el("div", "verified", "Verified: " + match.inliers + " matching points"));
      card.append(image, meta);
      matchesBox.append(card);
    });
    renderProofs(matches);
  }

  function loadImage(url) {
    return new Promise(function (resolve, reject) {
      const image = new Image();
      image.onload = function () { resolve(image); };
      image.onerror = function () { reject(new Error("could not load " + url)); };
      image.src = url;
    });
  }

  // The query and a verified reference photo side by side, a line between each pair of matching points.
  async function drawProof(canvas, referenceUrl, correspondences) {
    const images = await Promise.all([loadImage(queryImageUrl), loadImage(referenceUrl)]);
    const height = 360;
    const widths = images.map(function (image) { return Math.round(image.naturalWidth * height / image.naturalHeight); });
    const gap = 12;
    canvas.width = widths[0] + gap + widths[1];
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.drawImage(images[0], 0, 0, widths[0], height);
    context.drawImage(images[1], widths[0] + gap, 0, widths[1], height);
    context.lineWidth = 1.5;
    correspondences.query.forEach(function (point, index) {
      const other = correspondences.reference[index];
      const hue = Math.round(index * 137.5) % 360; // neighbouring lines in different colours
      context.strokeStyle = "hsla(" + hue + ", 90%, 55%, 0.85)";
      context.beginPath();
      context.moveTo(point[0] * widths[0], point[1] * height);
      context.lineTo(widths[0] + gap + other[0] * widths[1], other[1] * height);
      context.stroke();
    });
    canvas.dataset.drawn = String(correspondences.query.length);
  }

  function renderProofs(matches) {
    proofBox.replaceChildren();
    const proven = matches.filter(function (m) { return m.verified && m.correspondences; }).slice(0, PROOFS_SHOWN);
    proofBox.hidden = !proven.length || !queryImageUrl;
    if (proofBox.hidden) return;
    proofBox.append(el("h2", null, "Why the verified matches are trusted"));
    proven.forEach(function (match) {
      const figure = el("figure", "proof");
      const canvas = el("canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", "Your photo and " + match.title + ", with lines between matching points");
      const caption = el("figcaption", null,
        "Your photo (left) and " + match.title + " (right): " + match.correspondences.total +
        " points agree on one camera geometry" +
        (match.correspondences.total > match.correspondences.query.length ? " (" + match.correspondences.query.length + " drawn)." : "."));
      figure.append(canvas, caption);
      proofBox.append(figure);
      drawProof(canvas, match.image_url, match.correspondences).catch(function (e) { caption.textContent = String(e); });
    });
  }

  function similarityMatches(sources) {
    const similarity = sources.find(function (s) { return s.result && s.result.matches; });
    return similarity ? similarity.result.matches : [];
  }

  async function locate(file) {
    if (!file) return;
    if (!file.type.startsWith("image/") && file.type !== "") {
      setStatus("That file is not an image (" + file.type + ").", true);
      return;
    }
    setStatus("Looking for this place…");
    if (queryImageUrl && queryImageUrl.startsWith("blob:")) URL.revokeObjectURL(queryImageUrl);
    queryImageUrl = URL.createObjectURL(file);
    preview.src = queryImageUrl;
    const body = new FormData();
    body.append("image", file);
    body.append("explain", "1");
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

  // One photo: every source's report, the matches and the proof; several: a list and a map (many.js).
  function locateChosen(files) {
    if (files.length > 1) {
      setStatus("");
      window.geolocatorMany.locate(files).catch(function (e) { setStatus(String(e), true); });
      return;
    }
    document.getElementById("many").hidden = true;
    locate(files[0]).catch(function (e) { setStatus(String(e), true); });
  }
  input.addEventListener("change", function () { locateChosen(input.files); });
  ["dragenter", "dragover"].forEach(function (name) {
    form.addEventListener(name, function (event) { event.preventDefault(); form.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    form.addEventListener(name, function (event) { event.preventDefault(); form.classList.remove("dragging"); });
  });
  form.addEventListener("drop", function (event) { locateChosen(event.dataTransfer.files); });

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
      queryImageUrl = null;
      showSearchResult(await response.json(), "Text search: " + q);
    });
  }

  // /?photo=<id>: photos similar to a stored reference photo (the admin's "find similar" link).
  const photoId = new URLSearchParams(window.location.search).get("photo");
  if (photoId && /^\d+$/.test(photoId)) {
    setStatus("Finding photos similar to reference photo " + photoId + "…");
    fetch("/api/photos/" + photoId + "/").then(function (r) { return r.ok ? r.json() : null; }).then(function (photo) {
      if (photo) preview.src = queryImageUrl = photo.image_url;
      return fetch("/api/photos/" + photoId + "/similar/?top_k=10&explain=1");
    }).then(async function (response) {
      if (!response) return;
      if (!response.ok) { setStatus(await readError(response), true); return; }
      showSearchResult(await response.json(), "Reference photos similar to photo " + photoId);
    });
  }
})();
