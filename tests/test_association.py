import numpy as np
import pytest

from pipeline.config import AssociationConfig
from pipeline.identity.association import (
    TransitConstraints,
    TransitRule,
    associate_tracks,
    center_per_camera,
    reciprocal_links,
)

from identity_runs import summary, unit

E = np.eye(16, dtype=np.float32)


def partition(ids) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, ident in enumerate(ids):
        groups.setdefault(int(ident), set()).add(i)
    return {frozenset(g) for g in groups.values()}


def test_same_camera_tracks_overlapping_in_time_never_merge_even_when_identical():
    tracks = [summary("a", 1, 0, 10, E[0]), summary("a", 2, 5, 15, E[0]), summary("b", 1, 30, 40, E[0])]
    ids = associate_tracks(tracks).identity_ids
    assert ids[0] != ids[1]
    assert ids[2] in (ids[0], ids[1])  # the other camera's track still joins one of them


def test_conflict_is_checked_against_the_whole_cluster():
    # a1-b1 merge first (strongest link); a2 overlaps a1, so it cannot join through b1 either.
    f = E[0]
    near = unit(E[0] + 0.3 * E[1])
    tracks = [summary("a", 1, 0, 10, f), summary("b", 1, 20, 30, f), summary("a", 2, 5, 15, near)]
    result = associate_tracks(tracks)
    ids = result.identity_ids
    assert ids[0] == ids[1] and ids[2] != ids[0]
    assert result.blocked_by_constraints >= 1


def test_same_camera_tracks_sharing_one_frame_never_merge():
    ids = associate_tracks([summary("a", 1, 0, 1.0, E[0]), summary("a", 2, 1.0, 2.0, E[0])]).identity_ids
    assert ids[0] != ids[1]


def test_same_camera_fragments_that_do_not_overlap_merge_only_with_join_same_camera():
    fragments = [summary("a", 1, 0, 10, E[0]), summary("a", 2, 12, 20, E[0])]
    joined = associate_tracks(fragments, AssociationConfig(join_same_camera=True)).identity_ids
    assert joined[0] == joined[1]
    apart = associate_tracks(fragments).identity_ids  # the default: one camera's tracks stay apart
    assert apart[0] != apart[1]


def test_threshold_separates_links():
    cfg = AssociationConfig(threshold=0.6)
    just_below = unit(0.59 * E[0] + np.sqrt(1 - 0.59**2) * E[1])
    just_above = unit(0.61 * E[0] + np.sqrt(1 - 0.61**2) * E[1])
    assert len(set(associate_tracks([summary("a", 1, 0, 1, E[0]), summary("b", 1, 5, 6, just_below)], cfg)
                   .identity_ids.tolist())) == 2
    assert len(set(associate_tracks([summary("a", 1, 0, 1, E[0]), summary("b", 1, 5, 6, just_above)], cfg)
                   .identity_ids.tolist())) == 1


def test_cluster_mean_check_stops_chaining():
    # a~b and b~c at cosine 0.71, a and c orthogonal: single linkage would chain all three.
    tracks = [summary("a", 1, 0, 1, E[0]), summary("b", 1, 5, 6, E[0] + E[1]), summary("c", 1, 9, 10, E[1])]
    ids = associate_tracks(tracks, AssociationConfig(threshold=0.6)).identity_ids
    assert len(set(ids.tolist())) == 2


def test_identities_are_numbered_by_first_appearance_and_order_independent():
    rng = np.random.default_rng(1)
    people = unit(rng.standard_normal((6, 16)))
    tracks = [
        summary(f"cam{c}", 10 * p + c, 100.0 * p + 20 * c, 100.0 * p + 20 * c + 10,
                people[p] + 0.05 * rng.standard_normal(16))
        for p in range(6) for c in range(3)
    ]
    ids = associate_tracks(tracks).identity_ids
    assert partition(ids) == {frozenset(range(3 * p, 3 * p + 3)) for p in range(6)}
    assert ids.tolist() == [p + 1 for p in range(6) for _ in range(3)]
    order = rng.permutation(len(tracks))
    shuffled = associate_tracks([tracks[i] for i in order]).identity_ids
    assert np.array_equal(shuffled, ids[order])


def test_transit_rules_min_max_travel_and_listed_pairs():
    tracks = [summary("hall", 1, 0, 10, E[0]), summary("door", 1, 15, 20, E[0])]  # 5 s walk
    def n_ids(transit):
        return len(set(associate_tracks(tracks, transit=transit).identity_ids.tolist()))

    assert n_ids(TransitConstraints([TransitRule(("door", "hall"), 2, 60)])) == 1
    assert n_ids(TransitConstraints([TransitRule(("hall", "door"), 10, 60)])) == 2  # too fast
    assert n_ids(TransitConstraints([TransitRule(("hall", "door"), 0, 3)])) == 2  # too slow
    assert n_ids(TransitConstraints([TransitRule(("hall", "lift"), 0, 60)], only_listed=True)) == 2
    assert n_ids(TransitConstraints([TransitRule(("hall", "lift"), 0, 60)], only_listed=False)) == 1


def test_new_tracks_join_known_identities_which_keep_their_ids():
    known = [summary("a", 1, 0, 10, E[0]), summary("b", 1, 0, 10, E[1])]
    new = [summary("c", 1, 50, 60, E[1]), summary("c", 2, 50, 60, E[5]), summary("c", 3, 70, 80, E[0])]
    result = associate_tracks(new, known=known, known_identities=[4, 9])
    assert result.identity_ids.tolist() == [9, 10, 4]


def test_two_known_identities_are_never_merged():
    known = [summary("a", 1, 0, 10, E[0]), summary("b", 1, 0, 10, E[0])]
    result = associate_tracks([summary("c", 1, 50, 60, E[0])], known=known, known_identities=[1, 2])
    assert result.identity_ids.tolist() in ([1], [2])


def test_approximate_knn_graph_for_large_inputs_gives_the_same_clusters():
    rng = np.random.default_rng(2)
    people = unit(rng.standard_normal((60, 32)))
    tracks = [
        summary(f"cam{v}", p + 1, 1000.0 * p + 50 * v, 1000.0 * p + 50 * v + 20,
                people[p] + 0.05 * rng.standard_normal(32))
        for p in range(60) for v in range(4)
    ]
    raw = {"center_cameras": False}  # random people, no camera bias: the raw threshold fits them
    exact = associate_tracks(tracks, AssociationConfig(exact_search_max=10_000, **raw)).identity_ids
    approx = associate_tracks(tracks, AssociationConfig(exact_search_max=50, **raw)).identity_ids
    assert partition(exact) == partition(approx) == {frozenset(range(4 * p, 4 * p + 4)) for p in range(60)}


def test_empty_input_and_mismatched_known_lists():
    assert associate_tracks([]).identity_ids.shape == (0,)
    with pytest.raises(ValueError):
        associate_tracks([summary("a", 1, 0, 1, E[0])], known=[summary("b", 1, 0, 1, E[0])])


def biased_cameras() -> list:
    """Eight people seen by cameras a and b, each camera adding a bias twice as long as the person's
    own feature (a colour cast): raw cosine of one person across cameras 0.2, of two people 0."""
    tracks = []
    for camera, bias in (("a", 2 * E[10]), ("b", 2 * E[11])):
        start = 0.0 if camera == "a" else 100.0
        for person in range(8):  # all at once: same-camera tracks can never merge
            tracks.append(summary(camera, person + 1, start, start + 10, unit(bias + E[person])))
    return tracks


def test_centering_per_camera_removes_a_camera_bias():
    tracks = biased_cameras()
    raw = associate_tracks(tracks, AssociationConfig(threshold=0.5, center_cameras=False))
    assert len(set(raw.identity_ids.tolist())) == 16 and not raw.centered  # the bias hides everyone
    centered = associate_tracks(tracks, AssociationConfig(threshold=0.99, centered_threshold=0.5))
    assert centered.centered and partition(centered.identity_ids) == {frozenset({p, p + 8}) for p in range(8)}


def test_a_camera_with_too_few_tracks_to_centre_keeps_raw_features_and_threshold():
    # Camera c has one track: its own mean would be the track itself (a zero vector after subtraction).
    tracks = [*biased_cameras(), summary("c", 1, 200.0, 210.0, unit(2 * E[12] + E[0]))]
    assert center_per_camera(np.stack([t.feature for t in tracks]), [t.camera for t in tracks]) is None
    config = AssociationConfig(threshold=0.5, centered_threshold=0.1, reciprocal_threshold=0.1)
    result = associate_tracks(tracks, config)
    assert not result.centered and len(set(result.identity_ids.tolist())) == 17  # raw cosines stay under 0.5


def faint_in_camera_b() -> list:
    """Eight people in cameras a and b plus a ninth in b only. In b each person's own direction is
    faint beside a b-only one, so one person's centred cosine across the cameras is about 0.45 (under
    a centred threshold of 0.5), and two people's about -0.06."""
    basis = np.eye(40, dtype=np.float32)
    tracks = [summary("a", p + 1, 0.0, 10.0, unit(2 * basis[30] + basis[p])) for p in range(8)]
    tracks += [summary("b", p + 1, 100.0, 110.0, unit(2 * basis[31] + 0.45 * basis[p] + 0.9 * basis[10 + p]))
               for p in range(9)]
    return tracks


@pytest.mark.parametrize("reciprocal", [None, 0.25])
def test_reciprocal_links_join_each_others_best_match_under_the_centred_threshold(reciprocal):
    tracks = faint_in_camera_b()
    result = associate_tracks(tracks, AssociationConfig(centered_threshold=0.5, reciprocal_threshold=reciprocal))
    assert result.centered
    if reciprocal is None:
        assert len(set(result.identity_ids.tolist())) == 17
    else:  # the eight pairs; b's ninth person has no partner in a and stays alone
        assert partition(result.identity_ids) == {frozenset({p, p + 8}) for p in range(8)} | {frozenset({16})}


def test_reciprocal_links_need_both_tracks_to_choose_each_other():
    # b0's nearest track in a is a1; a0's nearest in b is b0 (the only one), but not the other way round
    features = np.array([unit(E[0] + 0.5 * E[1]), unit(E[1]), unit(E[1] + 0.2 * E[0])])
    i, j, sims = reciprocal_links(features, ["a", "a", "b"], 0, AssociationConfig(reciprocal_threshold=0.1))
    assert list(zip(i.tolist(), j.tolist())) == [(1, 2)]
    assert sims[0] == pytest.approx(float(features[1] @ features[2]))
    # tracks already in the store (the first n_known) are not linked among themselves
    assert len(reciprocal_links(features, ["a", "a", "b"], 3, AssociationConfig(reciprocal_threshold=0.1))[0]) == 0
    assert len(reciprocal_links(features, ["a", "a", "b"], 0, AssociationConfig(reciprocal_threshold=0.99))[0]) == 0


def test_without_join_same_camera_one_camera_never_holds_two_tracks_of_an_identity():
    # a1 and a2 (one camera, at different times) look alike, and b1 looks like both.
    tracks = [summary("a", 1, 0, 10, E[0]), summary("a", 2, 20, 30, E[0]), summary("b", 1, 40, 50, E[0])]
    assert len(set(associate_tracks(tracks, AssociationConfig(join_same_camera=True)).identity_ids.tolist())) == 1
    result = associate_tracks(tracks)  # the default
    ids = result.identity_ids
    assert ids[0] != ids[1]  # neither directly nor through b1
    assert ids[2] in (ids[0], ids[1]) and result.blocked_by_constraints >= 1


def test_reciprocal_links_of_new_tracks_equal_those_of_a_search_over_every_track():
    # Only the new tracks' nearest are searched in cameras without new tracks (a known-known pair
    # is never a link); the links are those of the full search that involve a new track.
    from pipeline.config import AssociationConfig
    from pipeline.identity.association import reciprocal_links

    rng = np.random.default_rng(3)
    people = rng.normal(size=(30, 16))
    n_known, n_new = 300, 40
    identity = rng.integers(0, 30, n_known + n_new)
    features = people[identity] + 0.6 * rng.normal(size=(n_known + n_new, 16))
    features = (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)
    cameras = [f"c{k % 6}" for k in range(n_known)] + ["new"] * (n_new // 2) + ["c2"] * (n_new - n_new // 2)
    cfg = AssociationConfig(reciprocal_threshold=0.2)
    full = reciprocal_links(features, cameras, 0, cfg)
    keep = full[1] >= n_known
    got = reciprocal_links(features, cameras, n_known, cfg)
    assert len(got[0]) >= 10
    for a, b in zip(got, full):
        np.testing.assert_array_equal(a, b[keep])
