"""python manage.py evaluate_similarity [--manifest CSV | --leave-one-out] [--radius-m 25] [--json]"""

import json
import math
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from similarity import search
from similarity.gallery.images import open_image
from similarity.gallery.importer import ManifestError, read_manifest_csv
from similarity.geometry.evaluation import QueryOutcome, default_thresholds, summarize
from similarity.geometry.geo import haversine_m
from similarity.models import PhotoEmbedding, ReferencePhoto, parse_number
from similarity.runtime.encoders import EncoderUnavailable
from similarity.search import features
from similarity.search.vectors import get_encoder

# what the report without verification repeats, for the comparison
COMPARED = ("estimate_within_radius_of_answerable", "recall", "within_km", "median_error_m", "recommended_threshold")


def outcome(
    label: str, latitude: float, longitude: float, result: search.SearchResult, answerable: bool
) -> QueryOutcome:
    return QueryOutcome(
        label=label,
        latitude=latitude,
        longitude=longitude,
        matches=result.positions,
        estimate=result.estimate,
        answerable=answerable,
        verified=bool(result.matches and result.matches[0].verified),
    )


class Gallery:
    """Where the gallery's photos are: which queries have a photo within the radius (are answerable)."""

    def __init__(self, photos, radius_m: float):
        self.positions = [(photo.pk, photo.latitude, photo.longitude) for photo in photos]
        self.radius_m = radius_m

    def answerable(self, latitude: float, longitude: float, itself: int | None = None) -> bool:
        return any(
            pk != itself and haversine_m(latitude, longitude, lat, lon) <= self.radius_m
            for pk, lat, lon in self.positions
        )


def finite_or_none(value):
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Command(BaseCommand):
    help = (
        "Measure how well similarity search locates photos: recall@1/5/10 within a radius, the share of "
        "queries within 1/25/200/750/2500 km, median errors (top-1 and estimate), and coverage/precision "
        "per threshold with a recommended threshold."
    )

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--manifest", type=Path, help="CSV of query photos (file, latitude, longitude).")
        source.add_argument(
            "--leave-one-out", action="store_true", help="Query every gallery photo against the others."
        )
        parser.add_argument("--radius-m", type=float, default=25.0, help="A prediction this close is correct.")
        parser.add_argument("--top-k", type=int, default=10)
        parser.add_argument("--target-precision", type=float, default=0.9)
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON instead of a table.")
        parser.add_argument(
            "--no-verification",
            action="store_true",
            help="Only the figures without geometric verification (faster; by default both are reported).",
        )

    def handle(
        self, *args, manifest, leave_one_out, radius_m, top_k, target_precision, as_json, no_verification, **options
    ):
        if not (radius_m > 0 and math.isfinite(radius_m)):
            raise CommandError("--radius-m must be a positive number.")
        if not 1 <= top_k <= 50:
            raise CommandError("--top-k must be between 1 and 50.")
        if not 0 < target_precision <= 1:
            raise CommandError("--target-precision must be in (0, 1].")
        modes = ["off"] if no_verification else list(dict.fromkeys([features.verification_mode("all"), "off"]))
        reports = {}
        try:
            encoder = get_encoder()
            embedded = PhotoEmbedding.current(encoder.id).values_list("photo_id", flat=True)
            gallery = Gallery(ReferencePhoto.objects.filter(pk__in=embedded, is_active=True).order_by("pk"), radius_m)
            for mode in modes:
                outcomes = (
                    self.leave_one_out(gallery, top_k, mode)
                    if leave_one_out
                    else self.from_manifest(manifest, gallery, top_k, mode)
                )
                if not outcomes:
                    raise CommandError(
                        "Nothing to evaluate: no queries (is the gallery embedded? run build_clip_index)."
                    )
                reports[mode] = summarize(
                    outcomes, radius_m=radius_m, thresholds=default_thresholds(), target_precision=target_precision
                )
        except (EncoderUnavailable, ManifestError, search.IndexEncoderMismatch) as exc:
            raise CommandError(str(exc)) from None
        report = reports[modes[0]]
        report["geometric_verification"] = modes[0] != "off"
        if len(modes) > 1:
            report["without_verification"] = {key: reports["off"][key] for key in COMPARED}
        report["encoder"] = encoder.id
        report["mode"] = "leave-one-out" if leave_one_out else str(manifest)
        self.stdout.write(json.dumps(finite_or_none(report), indent=2) if as_json else self.table(report))

    def leave_one_out(self, gallery: Gallery, top_k: int, verify: str) -> list[QueryOutcome]:
        photos = ReferencePhoto.objects.filter(pk__in=[pk for pk, _, _ in gallery.positions]).order_by("pk")
        return [
            outcome(
                f"photo {photo.pk}",
                photo.latitude,
                photo.longitude,
                search.search_similar_to_photo(photo, top_k=top_k, verify=verify),
                gallery.answerable(photo.latitude, photo.longitude, itself=photo.pk),
            )
            for photo in photos
        ]

    def from_manifest(self, manifest: Path, gallery: Gallery, top_k: int, verify: str) -> list[QueryOutcome]:
        outcomes = []
        for path, row in read_manifest_csv(manifest).items():
            try:
                latitude, longitude = parse_number(row.latitude), parse_number(row.longitude)
                with open(path, "rb") as handle:
                    image = open_image(handle, draft_size=get_encoder().draft_size)
            except (ValueError, OSError) as exc:  # ImageRejected is a ValueError
                self.stderr.write(f"skipped {path}: {exc}")
                continue
            result = search.search_image(image, top_k=top_k, verify=verify)
            outcomes.append(outcome(str(path), latitude, longitude, result, gallery.answerable(latitude, longitude)))
        return outcomes

    @staticmethod
    def table(report: dict) -> str:
        def pct(value):
            return "   -  " if value is None else f"{100 * value:5.1f}%"

        def metres(value):
            return "-" if value is None or not math.isfinite(value) else f"{value:,.0f} m"

        verified = report["verification"]
        lines = [
            f"Encoder {report['encoder']}, {report['queries']} queries ({report['mode']}), correct within {report['radius_m']:g} m",
            f"Geometric verification: {'on' if report['geometric_verification'] else 'off'}",
            "",
            f"Answerable (another gallery photo within {report['radius_m']:g} m): {report['answerable']}; "
            f"answered within {report['radius_m']:g} m: {pct(report['estimate_within_radius_of_answerable'])}",
        ]
        if report["geometric_verification"]:
            lines += [
                f"Verified top match: {verified['verified']['queries']} queries, right {verified['verified']['right']} "
                f"({pct(verified['verified']['precision'])}); unverified: {verified['unverified']['queries']}, "
                f"right {verified['unverified']['right']} ({pct(verified['unverified']['precision'])})",
            ]
        if "without_verification" in report:
            without = report["without_verification"]
            lines.append(
                f"Without verification: answered within {report['radius_m']:g} m "
                f"{pct(without['estimate_within_radius_of_answerable'])} of answerable, recall@1 {pct(without['recall']['@1'])}, "
                f"median error of the estimate {metres(without['median_error_m']['estimate'])}"
            )
        lines += [
            "",
            "Recall within radius:  " + "   ".join(f"{k} {pct(v)}" for k, v in report["recall"].items()),
            "",
            "Share within      " + " ".join(f"{level:>8s}" for level in report["within_km"]["top1"]),
        ]
        for which in ("top1", "estimate"):
            lines.append(f"  {which:<15s} " + " ".join(f"{pct(v):>8s}" for v in report["within_km"][which].values()))
        lines += [
            "",
            f"Median error: top-1 {metres(report['median_error_m']['top1'])}, estimate {metres(report['median_error_m']['estimate'])}",
            "",
            "Threshold  coverage  precision  answered",
        ]
        for row in report["thresholds"]:
            lines.append(
                f"  {row['threshold']:.2f}     {pct(row['coverage'])}    {pct(row['precision'])}   {row['answered']:5d}"
            )
        recommended = report["recommended_threshold"]
        lines.append("")
        if recommended is None:
            lines.append(f"No threshold reaches precision {report['target_precision']:.0%}.")
        else:
            lines.append(f"Recommended threshold for precision >= {report['target_precision']:.0%}: {recommended:.2f}")
        return "\n".join(lines)
