"""The curated name tables of ``unify: curated`` (written for this project, not the original's).

``PREFERRED_NAMES`` puts a preferred name first; ``MERGE_BLACKLIST`` lists synonyms too
ambiguous to merge on. They were gathered from the cross-name merges of the real ADE20K
2016 index and the Pascal tables (benches/list_merges.py). The default rule is the
original build's (``unify: original``, broden_builder.synonyms); these tables are used
only when a recipe says ``unify: curated``.
"""
from __future__ import annotations

#: name -> preferred name (written for this project from the published description).
PREFERRED_NAMES: dict = {
    "aeroplane": "airplane",
    "motorbike": "motorbike",
    "tvmonitor": "television",
    "tv monitor": "television",
    "pottedplant": "potted plant",
    "diningtable": "table",
    "dining table": "table",
    "person head": "head",
    "person hair": "hair",
    "person leg": "leg",
    "person arm": "arm",
    "person hand": "hand",
    "person foot": "foot",
    "person torso": "torso",
    "person neck": "neck",
    "person nose": "nose",
    "person mouth": "mouth",
    "person eye": "eye",
    "person ear": "ear",
    "person eyebrow": "eyebrow",
    "rug": "rug",
    "sofa": "sofa",
    "couch": "sofa",
    "tv": "television",
    "television receiver": "television",
    # Pascal-Context / Pascal-Part spellings (helper 4B)
    "handle bar": "handlebar",  # bicycle part (part2ind.m comment) = motorbike part 'handlebar'
    "fire place": "fireplace",
    "fridge": "refrigerator",
    # from the cross-name merges on the real ADE 2016 index + Pascal tables (helper 5b, benches/list_merges.py)
    "cell phone": "cellphone",  # Pascal-Context 'cell phone' = ADE 'cellular telephone, ..., cellphone, ...'
    "flood": "floodlight",      # ADE 'flood, floodlight, flood lamp, photoflood': the lamp, not water
    "plaything": "toy",         # ADE 'plaything, toy' = Pascal-Context 'toy'
}

#: Synonyms too ambiguous to merge on (a car is not a 'machine'; 'plant' the flora is not a factory).
MERGE_BLACKLIST: frozenset = frozenset({
    "machine", "plant", "building", "structure", "device", "object", "thing", "stuff", "unit",
    "set", "board", "case", "top", "base", "body", "stand", "cover", "frame", "support", "part",
    "piece", "area", "ground", "surface", "material", "other",
    # ADE20K synonyms that would swallow a Pascal name of another meaning (helper 4B):
    "wheel",    # 'bicycle, bike, wheel, cycle' and 'steering wheel, wheel' vs the part 'wheel'
    "coach",    # 'bus, autobus, coach, ...' vs the train part 'coach' (a railway carriage)
    "screen",   # 'blind, screen', 'screen door, screen' vs the tvmonitor part / Context 'screen'
    "pot", "can", "stool",  # 'toilet, can, commode, crapper, pot, potty, stool, throne'
    "dog",      # 'andiron, firedog, dog, dog-iron' vs the animal
    "cake",     # 'patty, cake'
    "card",     # 'poster, posting, placard, notice, bill, card'
    "drop",     # 'cliff, drop, drop-off' vs Context 'drop' (of liquid)
    "globe",    # 'ball, globe, orb' vs Context 'globe'
    "lid",      # 'hat, chapeau, lid'
    "paper",    # 'newspaper, paper' (Context has both 'paper' and 'newspaper')
    "counter",  # 'buffet, counter, sideboard'
    # found on the real ADE 2016 index (helper 5b, benches/list_merges.py; scenes of the images in brackets):
    "plane",     # 'airplane, aeroplane, plane' vs the part 'plane' (art studio: a tool or a flat face)
    "alarm",     # 'alarm clock, alarm' (bedrooms) vs 'alarm, warning device, alarm system' (streets)
    "carriage",  # 'baby buggy, baby carriage, carriage, ...' vs 'carriage' (streets: horse-drawn)
    "hoop",      # 'basket, basketball hoop, hoop' vs the part 'hoop' (wine cellars: barrel hoops)
    "shell", "shield",  # 'carapace, shell, cuticle, shield' vs 'shell, case, casing' and 'shield'
    "cell",      # 'cellular telephone, ..., cell, ...' vs 'cell' (jail cells)
    "console",   # 'console table, console' vs 'console' (cockpits, editing rooms)
    "mantle",    # 'curtain, drape, drapery, mantle, pall' vs 'mantle' (living rooms: the mantelpiece)
    "plug",      # 'fireplug, fire hydrant, plug' vs 'plug' (bathrooms, kitchens)
    "hutch",     # 'hovel, hut, hutch, shack, shanty' vs 'hutch' (a cupboard; a rabbit hutch)
    "boiler",    # 'kettle, boiler' vs 'boiler' (basements, furnace rooms)
    "throne",    # 'toilet, can, commode, ..., throne' vs 'throne' (throne rooms)
    "press",     # 'wardrobe, closet, press' vs 'press' (a workroom machine)
})
