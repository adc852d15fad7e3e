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
