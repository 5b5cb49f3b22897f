"""Tiny raw trees in each benchmark dataset's own layout (CoOp's folders, annotation files, .mat files).

Each builder writes a few classes of 4x4 images under ``root`` the way the real download unpacks,
and returns what a correct reader must produce: the class name of each label (in label order) and
the number of images per class in each split (``None`` where the split is drawn at random).
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, List

import numpy as np
from PIL import Image

WNIDS = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n01484850": "great white shark",
    "n01491361": "tiger shark",
    "n01494475": "hammerhead shark",
}


def image(path: str, seed: int = 0) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed % (2**31))
    Image.fromarray(rng.randint(0, 255, size=(4, 4, 3), dtype=np.uint8)).save(path, format="PNG" if path.endswith(".png") else "JPEG")
    return path


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def imagenet_classnames(path: str, wnids=WNIDS) -> None:
    write(path, "".join(f"{w} {n}\n" for w, n in wnids.items()))


def class_folders(image_dir: str, folders: List[str], per_class: int = 10, ext: str = ".jpg") -> None:
    for c, folder in enumerate(folders):
        for i in range(per_class):
            image(os.path.join(image_dir, folder, f"{folder}_{i:04d}{ext}"), c * 1000 + i)


# --------------------------------------------------------------- builders
def caltech101(root: str) -> Dict:
    folders = ["accordion", "airplanes", "BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes"]
    class_folders(os.path.join(root, "caltech-101", "101_ObjectCategories"), folders)
    # sorted, case-sensitive (upper case first), ignored folders left out, CoOp's renames applied
    return {"classnames": ["face", "leopard", "motorbike", "accordion", "airplane"], "per_class": (5, 2, 3)}


def dtd(root: str) -> Dict:
    folders = ["banded", "blotchy", "braided"]
    class_folders(os.path.join(root, "dtd", "images"), folders, per_class=7)
    return {"classnames": folders, "per_class": (4, 1, 2)}  # round(3.5)=4, round(1.4)=1


def food101(root: str) -> Dict:
    folders = ["apple_pie", "baby_back_ribs", "baklava"]
    class_folders(os.path.join(root, "food-101", "images"), folders)
    return {"classnames": folders, "per_class": (5, 2, 3)}


def eurosat(root: str) -> Dict:
    folders = ["AnnualCrop", "Forest", "SeaLake"]
    class_folders(os.path.join(root, "eurosat", "2750"), folders)
    return {"classnames": ["Annual Crop Land", "Forest", "Sea or Lake"], "per_class": (5, 2, 3)}


def oxford_pets(root: str) -> Dict:
    base = os.path.join(root, "oxford_pets")
    breeds = ["Abyssinian", "american_bulldog", "great_pyrenees"]
    trainval, test = [], []
    for i in range(8):
        for label, breed in enumerate(breeds):  # interleaved, as in the real lists
            name = f"{breed}_{i + 1}"
            image(os.path.join(base, "images", name + ".jpg"), label * 100 + i)
            species = 1 if breed == "Abyssinian" else 2
            (trainval if i < 5 else test).append(f"{name} {label + 1} {species} {label + 1}\n")
    write(os.path.join(base, "annotations", "trainval.txt"), "".join(trainval))
    write(os.path.join(base, "annotations", "test.txt"), "".join(test))
    return {"classnames": ["abyssinian", "american_bulldog", "great_pyrenees"], "per_class": (4, 1, 3)}


def _savemat(path: str, data: Dict) -> None:
    from scipy.io import savemat

    os.makedirs(os.path.dirname(path), exist_ok=True)
    savemat(path, data)


def _car_annos(labels: List[int]):
    annos = np.zeros((1, len(labels)), dtype=[("fname", "O"), ("class", "O")])
    for i, label in enumerate(labels):
        annos[0, i]["fname"] = f"{i + 1:05d}.jpg"
        annos[0, i]["class"] = np.array([[label]], dtype=np.uint8)
    return annos


def stanford_cars(root: str) -> Dict:
    base = os.path.join(root, "stanford_cars")
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Tesla Model S Sedan 2012"]
    meta = np.empty((1, len(names)), dtype=object)
    for i, n in enumerate(names):
        meta[0, i] = np.array([n])
    _savemat(os.path.join(base, "devkit", "cars_meta.mat"), {"class_names": meta})
    train_labels = [1 + (i % 3) for i in range(15)]
    test_labels = [1 + (i % 3) for i in range(6)]
    _savemat(os.path.join(base, "devkit", "cars_train_annos.mat"), {"annotations": _car_annos(train_labels)})
    _savemat(os.path.join(base, "cars_test_annos_withlabels.mat"), {"annotations": _car_annos(test_labels)})
    for folder, labels in (("cars_train", train_labels), ("cars_test", test_labels)):
        for i, label in enumerate(labels):
            image(os.path.join(base, folder, f"{i + 1:05d}.jpg"), label * 100 + i)
    return {"classnames": ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Tesla Model S Sedan"], "per_class": (4, 1, 2)}


def oxford_flowers(root: str) -> Dict:
    base = os.path.join(root, "oxford_flowers")
    labels = [3, 1, 2] * 10  # label 3 appears first: CoOp walks labels in order of appearance
    _savemat(os.path.join(base, "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    write(os.path.join(base, "cat_to_name.json"), json.dumps({"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}))
    for i, label in enumerate(labels):
        image(os.path.join(base, "jpg", f"image_{i + 1:05d}.jpg"), i)
    return {"classnames": ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"], "per_class": (5, 2, 3)}


def fgvc_aircraft(root: str) -> Dict:
    base = os.path.join(root, "fgvc_aircraft")
    variants = ["707-320", "A300B4", "F-16A/B"]
    write(os.path.join(base, "variants.txt"), "".join(v + "\n" for v in variants))
    n = 0
    for split, count in (("train", 3), ("val", 2), ("test", 4)):
        lines = []
        for i in range(count):
            for v in variants:
                n += 1
                image_id = f"{1000000 + n:07d}"
                image(os.path.join(base, "images", image_id + ".jpg"), n)
                lines.append(f"{image_id} {v}\n")
        write(os.path.join(base, f"images_variant_{split}.txt"), "".join(lines))
    return {"classnames": variants, "per_class": (3, 2, 4)}


def sun397(root: str) -> Dict:
    base = os.path.join(root, "sun397")
    classes = ["a/abbey", "a/apartment_building/outdoor", "b/bakery/shop"]
    write(os.path.join(base, "ClassName.txt"), "".join(f"/{c}\n" for c in classes))
    train, test = [], []
    for c, cls in enumerate(classes):
        for i in range(8):
            rel = f"{cls}/sun_{c}{i:03d}.jpg"
            image(os.path.join(base, "SUN397", rel), c * 100 + i)
            (train if i < 5 else test).append(f"/{rel}\n")
    write(os.path.join(base, "Training_01.txt"), "".join(train))
    write(os.path.join(base, "Testing_01.txt"), "".join(test))
    return {"classnames": ["abbey", "outdoor apartment_building", "shop bakery"], "per_class": (4, 1, 3)}


def ucf101(root: str) -> Dict:
    base = os.path.join(root, "ucf101")
    actions = ["ApplyEyeMakeup", "BlowDryHair", "YoYo"]
    write(os.path.join(base, "ucfTrainTestlist", "classInd.txt"), "".join(f"{i + 1} {a}\r\n" for i, a in enumerate(actions)))
    train, test = [], []
    for label, action in enumerate(actions):
        folder = "_".join({"ApplyEyeMakeup": ["Apply", "Eye", "Makeup"], "BlowDryHair": ["Blow", "Dry", "Hair"], "YoYo": ["Yo", "Yo"]}[action])
        for g in range(8):
            video = f"v_{action}_g{g + 1:02d}_c01"
            image(os.path.join(base, "UCF-101-midframes", folder, video + ".jpg"), label * 100 + g)
            if g < 5:
                train.append(f"{action}/{video}.avi {label + 1}\r\n")
            else:
                test.append(f"{action}/{video}.avi\r\n")
    write(os.path.join(base, "ucfTrainTestlist", "trainlist01.txt"), "".join(train))
    write(os.path.join(base, "ucfTrainTestlist", "testlist01.txt"), "".join(test))
    return {"classnames": ["Apply_Eye_Makeup", "Blow_Dry_Hair", "Yo_Yo"], "per_class": (4, 1, 3)}


def imagenet(root: str) -> Dict:
    base = os.path.join(root, "imagenet")
    imagenet_classnames(os.path.join(base, "classnames.txt"))
    wnids = list(WNIDS)
    class_folders(os.path.join(base, "images", "train"), wnids, per_class=6, ext=".JPEG")
    class_folders(os.path.join(base, "images", "val"), wnids, per_class=3, ext=".JPEG")
    return {"classnames": list(WNIDS.values()), "per_class": (6, 3, 3)}


def imagenetv2(root: str) -> Dict:
    imagenet_classnames(os.path.join(root, "imagenet", "classnames.txt"))  # found through the fallback
    folder = os.path.join(root, "imagenetv2", "imagenetv2-matched-frequency-format-val")
    class_folders(folder, [str(i) for i in range(len(WNIDS))], per_class=2, ext=".jpeg")
    return {"classnames": list(WNIDS.values()), "per_class": (2, 2, 2)}


def imagenet_sketch(root: str) -> Dict:
    imagenet_classnames(os.path.join(root, "imagenet-sketch", "classnames.txt"))
    class_folders(os.path.join(root, "imagenet-sketch", "images"), list(WNIDS), per_class=2)
    return {"classnames": list(WNIDS.values()), "per_class": (2, 2, 2)}


def _imagenet_subset(root: str, folder: str, sub: str) -> Dict:
    imagenet_classnames(os.path.join(root, "imagenet", "classnames.txt"))
    subset = ["n01443537", "n01491361"]  # a subset of ImageNet's classes, as A and R are
    class_folders(os.path.join(root, folder, sub), subset, per_class=3)
    write(os.path.join(root, folder, sub, "README.txt"), "not a class\n")
    return {"classnames": [WNIDS[w] for w in subset], "per_class": (3, 3, 3), "imagenet_labels": [1, 3]}


def imagenet_a(root: str) -> Dict:
    return _imagenet_subset(root, "imagenet-adversarial", "imagenet-a")


def imagenet_r(root: str) -> Dict:
    return _imagenet_subset(root, "imagenet-rendition", "imagenet-r")


BUILDERS: Dict[str, Callable[[str], Dict]] = {
    "Caltech101": caltech101,
    "DescribableTextures": dtd,
    "Food101": food101,
    "EuroSAT": eurosat,
    "OxfordPets": oxford_pets,
    "StanfordCars": stanford_cars,
    "OxfordFlowers": oxford_flowers,
    "FGVCAircraft": fgvc_aircraft,
    "SUN397": sun397,
    "UCF101": ucf101,
    "ImageNet": imagenet,
    "ImageNetV2": imagenetv2,
    "ImageNetSketch": imagenet_sketch,
    "ImageNetA": imagenet_a,
    "ImageNetR": imagenet_r,
}
