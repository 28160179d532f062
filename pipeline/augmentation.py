"""Training-time image augmentation of FlipReID and AdaptiveL2, on albumentations 2.x.

Both augmentors take and return uint8 HxWx3 RGB images of the configured size; no normalization
happens here. Randomness comes from one private generator pair per augmentor (``seed=None`` means
fresh OS entropy), never from global ``np.random``.

albumentations 2.x notes (both originals were written against the 1.x API):
- Built-in transforms are created with ``strict=True`` so that 1.x argument names (``value=``,
  ``always_apply=``), which 2.x would otherwise only warn about and ignore, raise instead.
- ``Compose(seed=s)`` seeds *every* transform with the same ``s``, so their random streams are
  identical and the steps become correlated (e.g. "flip" implies "patch", the grayscale patch and
  the erased rectangle coincide). We therefore hand one shared generator pair to the whole Compose
  with ``set_random_state`` (see ``reseed``), which keeps the steps independent.
"""
import random

import cv2
import numpy as np
import albumentations as A
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import Field

__all__ = ["RandomGrayscalePatchReplacement", "RandomErasing", "sample_erasing_rectangle",
           "FlipReIDAugmentor", "AdaptiveL2Augmentor", "AUGMENTOR_NAMES",
           "IMAGE_AUGMENTOR_NAMES"]

# FlipReID's pad colour (ImageNet mean * 255) and ALR's erasing colour (CIFAR mean * 255).
FLIPREID_FILL = (123.68, 116.779, 103.939)
ADAPTIVEL2_ERASING_FILL = tuple(float(v) * 255 for v in (0.4914, 0.4822, 0.4465))
AUGMENTOR_NAMES = ("RandomErasingImageAugmentor", "BaseImageAugmentor")
# --image_augmentor_name: FlipReID's pipeline, then the Adaptive L2 original's two.
IMAGE_AUGMENTOR_NAMES = ("FlipReIDImageAugmentor",) + AUGMENTOR_NAMES


def saturate_to_uint8(values):
    """Round and clip like OpenCV's ``saturate_cast<uchar>`` (used for the padding border)."""
    return tuple(int(v) for v in np.clip(np.rint(np.asarray(values, np.float64)), 0, 255))


def truncate_to_uint8(values):
    """Clip and truncate like writing floats into a numpy uint8 array (used for the rectangles)."""
    return tuple(int(v) for v in np.trunc(np.clip(np.asarray(values, np.float64), 0, 255)))


def sample_erasing_rectangle(rng, height, width, sl=0.02, sh=0.4, r1=0.3, max_attempt_num=100):
    """Random-erasing rectangle sampling (Zhong et al.), shared by patch replacement and erasing.

    Up to ``max_attempt_num`` attempts: area ~ U(sl, sh) * H*W, aspect ratio ~ U(r1, 1/r1),
    h = round(sqrt(area*ratio)), w = round(sqrt(area/ratio)); accepted if w < W and h < H, then
    top ~ randint(0, H-h) and left ~ randint(0, W-w) with exclusive upper bounds (as numpy's
    ``randint``, so the rectangle never touches the last row/column).

    Returns ``(top, left, h, w)`` or ``None`` when no attempt was accepted.
    """
    image_area = height * width
    for _ in range(max_attempt_num):
        target_area = rng.uniform(sl, sh) * image_area
        aspect_ratio = rng.uniform(r1, 1 / r1)
        h = int(round(np.sqrt(target_area * aspect_ratio)))
        w = int(round(np.sqrt(target_area / aspect_ratio)))
        if w < width and h < height:
            top = int(rng.integers(0, height - h))
            left = int(rng.integers(0, width - w))
            return top, left, h, w
    return None


class _RandomRectangleTransform(A.ImageOnlyTransform):
    """Base class: samples one random-erasing rectangle per call from the transform's generator."""

    class InitSchema(BaseTransformInitSchema):
        sl: float = Field(gt=0, le=1)
        sh: float = Field(gt=0, le=1)
        r1: float = Field(gt=0, le=1)
        max_attempt_num: int = Field(ge=1)

    def __init__(self, sl=0.02, sh=0.4, r1=0.3, max_attempt_num=100, p=0.5):
        super().__init__(p=p)
        if sl > sh:
            raise ValueError(f"sl={sl} must not exceed sh={sh}.")
        self.sl = sl
        self.sh = sh
        self.r1 = r1
        self.max_attempt_num = max_attempt_num

    def get_params_dependent_on_data(self, params, data):
        height, width = params["shape"][:2]
        return {"rectangle": sample_erasing_rectangle(
            self.random_generator, height, width, self.sl, self.sh, self.r1, self.max_attempt_num)}

    def get_transform_init_args_names(self):
        return ("sl", "sh", "r1", "max_attempt_num")


class RandomGrayscalePatchReplacement(_RandomRectangleTransform):
    """Replace a random rectangle by its grayscale version (cv2 RGB2GRAY in all 3 channels)."""

    def apply(self, img, rectangle=None, **params):
        if rectangle is None:
            return img
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"RandomGrayscalePatchReplacement needs an HxWx3 RGB image, got shape "
                             f"{img.shape}.")
        top, left, h, w = rectangle
        img = img.copy()
        patch = np.ascontiguousarray(img[top:top + h, left:left + w])
        img[top:top + h, left:left + w] = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)[..., None]
        return img


class RandomErasing(_RandomRectangleTransform):
    """Fill a random rectangle with a constant colour.

    ``fill`` is given as floats (as the original code's means); it is truncated to uint8 like the
    original's assignment into a uint8 array, e.g. (123.68, 116.779, 103.939) -> (123, 116, 103).
    """

    class InitSchema(_RandomRectangleTransform.InitSchema):
        fill: tuple[float, ...] | float

    def __init__(self, fill=FLIPREID_FILL, sl=0.02, sh=0.4, r1=0.3, max_attempt_num=100, p=0.5):
        super().__init__(sl=sl, sh=sh, r1=r1, max_attempt_num=max_attempt_num, p=p)
        self.fill = fill
        self._fill_uint8 = np.array(truncate_to_uint8(np.atleast_1d(fill)), np.uint8)

    def apply(self, img, rectangle=None, **params):
        if rectangle is None:
            return img
        top, left, h, w = rectangle
        img = img.copy()
        fill = self._fill_uint8
        if img.ndim == 3 and fill.size not in (1, img.shape[2]):
            raise ValueError(f"RandomErasing fill has {fill.size} values but the image has "
                             f"{img.shape[2]} channels.")
        img[top:top + h, left:left + w] = fill if img.ndim == 3 else fill[0]
        return img

    def get_transform_init_args_names(self):
        return ("fill",) + super().get_transform_init_args_names()


def _padded_size(size, padding_length, padding_ratio):
    return size + int(max(padding_length, size * padding_ratio))


class _Augmentor:
    """Common part: validation, calling the Compose, reseeding."""

    def __init__(self, image_height, image_width, transforms, seed):
        if int(image_height) < 1 or int(image_width) < 1:
            raise ValueError(f"image_height and image_width must be positive, got "
                             f"{image_height}x{image_width}.")
        self.image_height = int(image_height)
        self.image_width = int(image_width)
        # is_check_shapes only concerns multi-target inputs; we pass one image.
        self.transforms = A.Compose(transforms, p=1.0, is_check_shapes=False)
        self.reseed(seed)

    def reseed(self, seed=None):
        """Restart the random stream (``None`` = fresh entropy); shared by all steps, see module doc."""
        numpy_seed, python_seed = np.random.SeedSequence(seed).spawn(2)
        self.transforms.set_random_state(np.random.default_rng(numpy_seed),
                                         random.Random(int(python_seed.generate_state(1)[0])))
        return self

    def __call__(self, image):
        image = np.asarray(image)
        expected = (self.image_height, self.image_width, 3)
        if image.dtype != np.uint8 or image.shape != expected:
            raise ValueError(f"{type(self).__name__} expects a uint8 RGB image of shape {expected}, got "
                             f"{image.dtype} {image.shape}; read images with "
                             f"pipeline.images.read_image(path, {expected[0]}, {expected[1]}).")
        return np.asarray(self.transforms(image=image)["image"], dtype=np.uint8)

    def __repr__(self):
        return f"{type(self).__name__}({self.transforms!r})"


class FlipReIDAugmentor(_Augmentor):
    """FlipReID ``ImageAugmentor``: pad with the ImageNet-mean colour, random crop,
    horizontal flip, grayscale patch replacement, random erasing."""

    def __init__(self, image_height, image_width, patch_replacement_probability=0.8,
                 random_erasing_probability=0.8, padding_length=0, padding_ratio=0.05,
                 horizontal_flip_probability=0.5, seed=None):
        self.padded_height = _padded_size(image_height, padding_length, padding_ratio)
        self.padded_width = _padded_size(image_width, padding_length, padding_ratio)
        # OpenCV saturates the float border colour: (123.68, 116.779, 103.939) -> (124, 117, 104).
        self.padding_fill = saturate_to_uint8(FLIPREID_FILL)
        transforms = [
            A.PadIfNeeded(min_height=self.padded_height, min_width=self.padded_width,
                          position="center", border_mode=cv2.BORDER_CONSTANT, fill=self.padding_fill,
                          p=1.0, strict=True),
            A.RandomCrop(height=image_height, width=image_width, p=1.0, strict=True),
            A.HorizontalFlip(p=horizontal_flip_probability, strict=True),
            RandomGrayscalePatchReplacement(p=patch_replacement_probability, strict=True),
            RandomErasing(fill=FLIPREID_FILL, p=random_erasing_probability, strict=True),
        ]
        super().__init__(image_height, image_width, transforms, seed)


class AdaptiveL2Augmentor(_Augmentor):
    """AdaptiveL2 ``RandomErasingImageAugmentor`` / ``BaseImageAugmentor``: horizontal
    flip first, pad ``padding_length/2`` black pixels per side, random crop, then (RandomErasing
    variant only) random erasing with the CIFAR-mean colour (125, 122, 113)."""

    def __init__(self, image_height, image_width, name="RandomErasingImageAugmentor",
                 horizontal_flip_probability=0.5, padding_length=20, padding_ratio=0.0,
                 random_erasing_probability=0.5, seed=None):
        if name not in AUGMENTOR_NAMES:
            raise ValueError(f"Unknown augmentor name {name!r}; use one of {AUGMENTOR_NAMES}.")
        self.name = name
        self.padded_height = _padded_size(image_height, padding_length, padding_ratio)
        self.padded_width = _padded_size(image_width, padding_length, padding_ratio)
        transforms = [
            A.HorizontalFlip(p=horizontal_flip_probability, strict=True),
            A.PadIfNeeded(min_height=self.padded_height, min_width=self.padded_width,
                          position="center", border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0,
                          strict=True),
            A.RandomCrop(height=image_height, width=image_width, p=1.0, strict=True),
        ]
        if name == "RandomErasingImageAugmentor":
            transforms.append(RandomErasing(fill=ADAPTIVEL2_ERASING_FILL,
                                            p=random_erasing_probability, strict=True))
        super().__init__(image_height, image_width, transforms, seed)
