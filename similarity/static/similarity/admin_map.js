// Map preview on the reference photo change page (Leaflet from our static files).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".photo-map").forEach(function (node) {
    const position = [parseFloat(node.dataset.lat), parseFloat(node.dataset.lon)];
    const map = L.map(node).setView(position, 16);
    L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      maxZoom: 19, attribution: "&copy; OpenStreetMap contributors",
    }).addTo(map);
    L.circleMarker(position, { radius: 8, color: "#1e8e3e", fillOpacity: 0.8, className: "photo-marker" }).addTo(map);
  });
});
