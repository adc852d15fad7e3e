import numpy as np
import pytest

from inference.errors import InputError
from inference.stages.detect import Detector, choose_subject
from inference.stages.load import load_photo
from inference.types import Detection


@pytest.fixture(scope="module")
def detector(weights_dir):
    return Detector(weights_dir / "yolo11n-pose.pt")


def test_bus_subject_is_the_largest_confident_full_body_person(detector, bus_jpg):
    photo = load_photo(bus_jpg)
    people = detector.detect([photo.image])[0]
    assert len(people) >= 3  # several people in that photo
    subject = choose_subject(people, photo.image.shape)
    confident = [p for p in people if p.score >= 0.4]
    area = lambda p: (p.box[2] - p.box[0]) * (p.box[3] - p.box[1])  # noqa: E731
    assert area(subject) == max(area(p) for p in confident)
    assert subject.keypoints[[15, 16], 2].min() > 0.5  # both ankles seen


def test_zidane_is_refused_as_cut_off(detector, zidane_jpg):
    photo = load_photo(zidane_jpg)
    with pytest.raises(InputError) as err:
        choose_subject(detector.detect([photo.image])[0], photo.image.shape)
    assert err.value.code == "body_truncated" and "feet" in str(err.value)


def test_an_empty_picture_has_no_person(detector):
    blank = np.full((480, 640, 3), 127, np.uint8)
    with pytest.raises(InputError) as err:
        choose_subject(detector.detect([blank])[0], blank.shape)
    assert err.value.code == "no_person"


def test_a_person_without_head_keypoints_is_refused():
    kp = np.zeros((17, 3))
    kp[:, :2] = 50
    kp[5:, 2] = 0.9  # body seen, head not
    person = Detection(box=np.array([10.0, 10, 90, 90]), score=0.9, keypoints=kp)
    with pytest.raises(InputError) as err:
        choose_subject([person], (100, 100, 3))
    assert "head" in str(err.value)


def _person(box, legs_x, kp_conf=0.9):
    """A frontal person in a 200-pixel-wide photo: shoulders at y 40, hips 100, knees 150,
    ankles 200; ``legs_x`` = (left knee, right knee, left ankle, right ankle) x."""
    kp = np.zeros((17, 3))
    kp[:, 2] = kp_conf
    kp[0] = (100, 20, kp_conf)
    kp[5], kp[6] = (115, 40, kp_conf), (85, 40, kp_conf)  # the person's left on the image's right
    kp[11], kp[12] = (110, 100, kp_conf), (90, 100, kp_conf)
    for j, x in zip((13, 14, 15, 16), legs_x):
        kp[j, 0] = x
    kp[[13, 14], 1], kp[[15, 16], 1] = 150, 200
    return Detection(box=np.asarray(box, np.float64), score=0.9, keypoints=kp)


def _mirror(p, width=200):
    """What the detector would report for ``p`` in the mirrored photo."""
    from inference.stages.detect import MIRROR

    kp = p.keypoints[list(MIRROR)].copy()
    kp[:, 0] = width - kp[:, 0]
    x1, y1, x2, y2 = p.box
    return Detection(box=np.array([width - x2, y1, width - x1, y2]), score=p.score, keypoints=kp)


def test_legs_put_in_the_gap_come_from_the_mirrored_reading():
    from inference.stages.detect import merge_mirrored

    collapsed = _person([60, 10, 140, 210], (103, 97, 104, 96))  # both legs in the gap
    spread = _person([60, 10, 140, 210], (125, 75, 135, 65))  # where they are
    out = merge_mirrored([collapsed], [_mirror(spread)], 200)[0]
    assert np.allclose(out.keypoints[13:17], spread.keypoints[13:17])  # left stays left
    assert np.allclose(out.keypoints[:13], collapsed.keypoints[:13])  # the rest is the photo's own
    assert np.allclose(out.box, collapsed.box)
    # the other way round (the mirrored reading collapsed) the photo's reading stands
    kept = merge_mirrored([spread], [_mirror(collapsed)], 200)[0]
    assert np.allclose(kept.keypoints, spread.keypoints)
    # legs swapped left for right in the photo's reading (crossed): the mirrored reading wins
    swapped = _person([60, 10, 140, 210], (75, 125, 65, 135))
    fixed = merge_mirrored([swapped], [_mirror(spread)], 200)[0]
    assert np.allclose(fixed.keypoints[13:17], spread.keypoints[13:17])


def test_mirrored_legs_need_the_same_person_and_seen_keypoints():
    from inference.stages.detect import merge_mirrored

    collapsed = _person([60, 10, 140, 210], (103, 97, 104, 96))
    elsewhere = _person([150, 10, 199, 210], (125, 75, 135, 65))  # another box: not the same person
    assert np.allclose(merge_mirrored([collapsed], [_mirror(elsewhere)], 200)[0].keypoints,
                       collapsed.keypoints)
    unsure = _person([60, 10, 140, 210], (125, 75, 135, 65), kp_conf=0.3)  # legs not surely seen
    assert np.allclose(merge_mirrored([collapsed], [_mirror(unsure)], 200)[0].keypoints,
                       collapsed.keypoints)
    # the photo's own reading unsure of its legs: kept (its check for cut-off feet stands)
    unsure_here = _person([60, 10, 140, 210], (103, 97, 104, 96), kp_conf=0.3)
    spread = _person([60, 10, 140, 210], (125, 75, 135, 65))
    assert np.allclose(merge_mirrored([unsure_here], [_mirror(spread)], 200)[0].keypoints,
                       unsure_here.keypoints)
    assert merge_mirrored([collapsed], [], 200)[0] is collapsed  # nobody in the mirrored photo


def test_the_mirrored_reading_leaves_a_clear_photo_as_it_was(detector, weights_dir, bus_jpg):
    """bus.jpg's subject stands with the legs apart on a plain street: both readings agree, so
    the detector with ``mirror`` (the default) returns the photo's own reading."""
    photo = load_photo(bus_jpg)
    plain = choose_subject(Detector(weights_dir / "yolo11n-pose.pt", mirror=False).detect([photo.image])[0],
                           photo.image.shape)
    both = choose_subject(detector.detect([photo.image])[0], photo.image.shape)
    assert np.allclose(both.keypoints, plain.keypoints) and np.allclose(both.box, plain.box)


def test_only_a_subject_with_legs_read_close_together_is_read_again_mirrored(weights_dir, bus_jpg):
    """The mirrored reading costs a second pass of the pose model: a photo whose subject's legs
    are read clearly apart (bus.jpg stretched across, ``legs_spread`` ~2) is not read again, one
    whose subject's legs are read close together (the same squeezed) is, and gets the merge."""
    import cv2

    from inference.stages.detect import LEGS_APART, largest_confident, legs_spread, merge_mirrored

    class Counting(Detector):
        def _read(self, bgr):
            self.reads.append(len(bgr))
            return super()._read(bgr)

    image = load_photo(bus_jpg).image
    apart, close = (cv2.resize(image, None, fx=fx, fy=1.0) for fx in (1.5, 0.6))
    plain = Detector(weights_dir / "yolo11n-pose.pt", mirror=False)
    spreads = [legs_spread(largest_confident(plain.detect([im])[0]).keypoints) for im in (apart, close)]
    assert spreads[0] > LEGS_APART > spreads[1]
    det = Counting(weights_dir / "yolo11n-pose.pt")
    det.reads = []
    got = det.detect([apart, close])
    assert det.reads == [2, 1]  # both photos, then the squeezed one mirrored
    own = plain.detect([apart, close])  # read as one batch, as the detector did
    assert all(np.allclose(a.keypoints, b.keypoints) for a, b in zip(got[0], own[0]))
    expected = merge_mirrored(own[1], plain.detect([np.ascontiguousarray(close[:, ::-1])])[0], close.shape[1])
    assert all(np.allclose(a.keypoints, b.keypoints) for a, b in zip(got[1], expected))
