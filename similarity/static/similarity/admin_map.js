// Maps in the admin (Leaflet from our static files): a photo's position, or a candidate's
// proposed position with the reference photos it matched. Text reaches the map as text only.
document.addEventListener("DOMContentLoaded", function () {
  function tileLayer(map) {
    L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      maxZoom: 19, attribution: "&copy; OpenStreetMap contributors",
    }).addTo(map);
  }
  function text(value) {
    const node = document.createElement("span");
    node.textContent = value;
    return node;
  }
  document.querySelectorAll(".photo-map").forEach(function (node) {
    const position = [parseFloat(node.dataset.lat), parseFloat(node.dataset.lon)];
    const map = L.map(node).setView(position, 16);
    tileLayer(map);
    const layers = L.featureGroup().addTo(map);
    L.circleMarker(position, { radius: 8, color: "#1e8e3e", fillOpacity: 0.8, className: "photo-marker" })
      .bindTooltip(text(node.classList.contains("candidate-map") ? "Proposed position" : "This photo"))
      .addTo(layers);
    if (node.dataset.matches) {
      JSON.parse(node.dataset.matches).forEach(function (match) {
        L.circleMarker([match.lat, match.lon], { radius: 6, color: "#2b6cdf", fillOpacity: 0.5, className: "match-marker" })
          .bindTooltip(text("Photo " + match.id + ": similarity " + Number(match.similarity).toFixed(3)))
          .addTo(layers);
      });
      if (layers.getLayers().length > 1) map.fitBounds(layers.getBounds().pad(0.3), { maxZoom: 17 });
    }
  });
});
