// What the locate page's scripts share (locate.js: one photo, many.js: several): making elements whose
// text is only ever text, a Leaflet map with OpenStreetMap tiles, and the message of an error response.
(function () {
  "use strict";

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Tiles when online; markers are drawn whether or not tiles load.
  function worldMap(mapNode) {
    L.Icon.Default.imagePath = mapNode.dataset.leafletImages;
    const map = L.map(mapNode, { worldCopyJump: true }).setView([20, 0], 2);
    L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      maxZoom: 19,
      attribution: "&copy; OpenStreetMap contributors",
    }).addTo(map);
    return map;
  }

  async function readError(response) {
    try {
      const body = await response.json();
      return body.error || body.detail || response.statusText;
    } catch (e) {
      return response.status + " " + response.statusText;
    }
  }

  window.geolocatorPage = { el: el, worldMap: worldMap, readError: readError };
})();
