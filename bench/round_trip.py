"""Export and restore the 54 places photos: nothing lost, nothing embedded again, identical figures.

The places gallery is imported and indexed in one data dir (EfficientNet-Lite0),
exported with `export_gallery OUT --vectors`, and restored on an empty
installation with `import_photos OUT --manifest OUT/manifest.csv --trust-vectors`
(its sample check embeds 16 photos to compare, and stores nothing of them); both run
`evaluate_similarity --leave-one-out --json`. Checked: every photo's bytes,
coordinates and texts come back, `build_clip_index` has nothing to embed after
the import, and the two reports are identical.

    .venv/bin/python bench/round_trip.py
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _django


def manage(data_dir: Path, *command: str) -> str:
    env = {
        **os.environ,
        "GEOLOCATOR_DATA_DIR": str(data_dir),
        "SIMILARITY_ENCODER": "efficientnet_lite0@384",
        "DJANGO_SECRET_KEY": "bench",
        "DJANGO_SETTINGS_MODULE": "geolocator.settings",
        "SIMILARITY_LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "manage.py", *command], cwd=_django.ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


SNAPSHOT = (
    "import json; from similarity.models import ReferencePhoto as P; "
    "print(json.dumps(sorted([p.sha256, p.latitude, p.longitude, p.title, p.address, p.source, p.license, p.notes] "
    "for p in P.objects.all())))"
)


def main() -> int:
    print(_django.machine())
    original = _django.prepare_gallery("efficientnet_lite0@384")
    out = Path(tempfile.mkdtemp(prefix="geolocator-export-")) / "places"
    print(manage(original, "export_gallery", str(out), "--vectors").strip())
    before = json.loads(manage(original, "evaluate_similarity", "--leave-one-out", "--json"))

    restored = Path(tempfile.mkdtemp(prefix="geolocator-bench-"))
    manage(restored, "migrate", "--noinput")
    print(
        manage(
            restored,
            "import_photos",
            str(out),
            "--manifest",
            str(out / "manifest.csv"),
            "--trust-vectors",
            "--no-progress",
        ).strip()
    )
    build = manage(restored, "build_clip_index", "--no-progress")
    to_embed = int(build.split(":", 1)[1].split("photo(s) to embed")[0])
    after = json.loads(manage(restored, "evaluate_similarity", "--leave-one-out", "--json"))

    def photos(data_dir):  # the shell may say more than the one JSON line asked for
        return json.loads(manage(data_dir, "shell", "-c", SNAPSHOT).strip().splitlines()[-1])

    same_photos = photos(original) == photos(restored)
    print(f"\nphotos, bytes (sha256), coordinates and texts identical after the round trip: {same_photos}")
    print(f"photos build_clip_index embedded after the import: {to_embed}")
    print(
        f"evaluate_similarity --leave-one-out identical: {before == after} "
        f"(recall@1 {after['recall']['@1']:.3f}, median error of the estimate {after['median_error_m']['estimate']:.1f} m)"
    )
    ok = same_photos and to_embed == 0 and before == after
    print("round trip loses nothing and embeds nothing:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
