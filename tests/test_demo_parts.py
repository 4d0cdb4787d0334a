"""How the demo names the parts it learned and which one it swaps (issue 21): a part is named
after the true part it sits on, and the swap shows the part the run learned best."""

import numpy as np

from copart.demo import names_from_overlap, part_to_swap
from copart.training.synthetic import PART_NAMES

TORSO, HEAD, LEFT_ARM, RIGHT_ARM, LEGS = (PART_NAMES.index(n) + 1 for n in PART_NAMES)


def overlap_of(rows: dict[int, dict[int, int]], k: int = 6) -> np.ndarray:
    overlap = np.zeros((k + 1, len(PART_NAMES) + 1))
    for c, counts in rows.items():
        for g, n in counts.items():
            overlap[c, g] = n
    return overlap


def test_a_part_over_the_neck_is_not_named_head():
    # channel 5 sits half on the head and half on the torso (the neck): 45 % head, 40 % torso
    overlap = overlap_of({1: {TORSO: 900, 0: 50}, 5: {HEAD: 45, TORSO: 40, 0: 15}, 2: {HEAD: 60, 0: 5}})
    names = names_from_overlap(overlap)
    assert names == {"torso": [1], "head": [2]}


def test_a_part_that_spills_onto_the_background_is_named_by_what_it_covers_of_the_figure():
    # the demo's seed-0 legs: 47 % legs, 45 % background, the rest torso -> legs; a part mostly
    # on the background (70 %) is named nothing
    overlap = overlap_of({2: {LEGS: 47, 0: 45, TORSO: 8}, 3: {HEAD: 30, 0: 70}})
    assert names_from_overlap(overlap) == {"legs": [2]}


def test_names_are_listed_largest_first_and_may_join_channels():
    overlap = overlap_of({1: {LEGS: 100}, 2: {LEGS: 80}, 3: {TORSO: 150}, 4: {HEAD: 30}})
    assert list(names_from_overlap(overlap).items()) == [("legs", [1, 2]), ("torso", [3]), ("head", [4])]


def test_the_swapped_part_is_the_one_learned_best_and_never_most_of_the_figure():
    # torso: most of the figure (excluded); head: IoU 60 / (70 + 100 - 60) = 0.55; legs: 90 / 110 = 0.82
    overlap = overlap_of({1: {TORSO: 600, HEAD: 10}, 2: {HEAD: 60, 0: 10}, 3: {LEGS: 90, 0: 10},
                          0: {HEAD: 30, LEGS: 10}})
    names = names_from_overlap(overlap)
    assert set(names) == {"torso", "head", "legs"}
    part, iou = part_to_swap(overlap, names)
    assert part == "legs" and abs(iou - 90 / 110) < 1e-3
    # with the head learned better, the head is chosen
    overlap[2, HEAD], overlap[0, HEAD] = 100, 0
    assert part_to_swap(overlap, names_from_overlap(overlap))[0] == "head"


def test_no_named_part_swaps_part_one():
    overlap = overlap_of({1: {HEAD: 10, TORSO: 10, 0: 30}})
    assert names_from_overlap(overlap) == {}
    assert part_to_swap(overlap, {}) == ("1", 0.0)
