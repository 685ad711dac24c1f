"""The admin's forms: a reference photo (checked by the intake) and the bulk upload."""

from django import forms
from django.core.exceptions import ValidationError

from similarity.gallery.images import ACCEPT_ATTRIBUTE
from similarity.gallery.intake import Refused, check_photo
from similarity.models import (
    ReferencePhoto,
    parse_number,
)


class CoordinateField(forms.FloatField):
    """A plain decimal number: what float() stretches to read ('1_0', full-width digits) is refused."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return parse_number(value)
        except ValueError:
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None


class ReferencePhotoForm(forms.ModelForm):
    """Coordinates may be left empty when the photo carries GPS EXIF."""

    class Meta:
        model = ReferencePhoto
        fields = "__all__"
        field_classes = {"latitude": CoordinateField, "longitude": CoordinateField}
        widgets = {"image": forms.ClearableFileInput(attrs={"accept": ACCEPT_ATTRIBUTE})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("latitude", "longitude"):
            self.fields[name].required = False
            self.fields[name].help_text = "Leave empty to use the photo's GPS EXIF."

    def clean(self):
        """The intake's own checks (similarity/gallery/intake.py), reported on the form."""
        cleaned = super().clean()
        upload = cleaned.get("image")
        self.checked = None
        if not upload or not hasattr(upload, "content_type"):  # no file, or the stored one kept
            return cleaned
        try:
            self.checked = check_photo(
                upload,
                cleaned.get("latitude"),
                cleaned.get("longitude"),
                replacing=self.instance if self.instance.pk else None,
            )
        except Refused as exc:
            raise ValidationError({"image": exc.reason} if exc.field == "image" else exc.reason) from None
        cleaned["latitude"], cleaned["longitude"] = self.checked.latitude, self.checked.longitude
        self.instance.latitude, self.instance.longitude = self.checked.latitude, self.checked.longitude
        self.coordinates_from_exif = self.checked.coordinates_from_exif
        if (
            not self.instance.pk
        ):  # hashed once: the model's own validation reuses it (a replaced file is hashed on save)
            self.instance.sha256 = self.checked.sha256
        return cleaned


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ACCEPT_ATTRIBUTE}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else [data]
        return [super(MultipleImageField, self).clean(item, initial) for item in files if item] or super().clean(None)


class BulkUploadForm(forms.Form):
    images = MultipleImageField(help_text="Many photos at once; coordinates come from each photo's GPS EXIF.")
    source = forms.CharField(max_length=300, required=False)
    license = forms.CharField(max_length=200, required=False)
