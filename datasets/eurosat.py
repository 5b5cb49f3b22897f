"""EuroSAT (RGB): ``eurosat/2750/<class>/*.jpg``, 10 land-use classes renamed to CoOp's phrases."""
from __future__ import annotations

from clip_adapter.data.build import CLASS_FOLDERS_PROCEDURE, split_class_folders
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.download import Resource, gdrive_file
from clip_adapter.registry import DATASETS

NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASETS.register()
class EuroSAT(DatasetBase):
    dataset_dir = "eurosat"
    image_dir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    split_procedure = CLASS_FOLDERS_PROCEDURE
    resources = (
        Resource(
            "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
            "EuroSAT.zip",
            members=(("2750", "2750"),),
            md5="c8fa014336c82ac7804f0398fcb19387",
        ),
        gdrive_file("1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o", "split_zhou_EuroSAT.json"),
    )

    def build_split(self):
        return split_class_folders(self.image_dir, new_cnames=NEW_CNAMES)
