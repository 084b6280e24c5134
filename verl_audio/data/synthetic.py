"""Template entailment problems in the ALR wording, with labels that are right by construction.

Each *form* (categorical syllogisms, conditionals, order relations, definitions) has valid moods
(label 1, entailed) and invalid moods (label 0, not-entailed: a countermodel exists in which the
premises hold and the conclusion fails). Vocabulary is contingent (occupations, hobbies, invented
institutions) so that world knowledge can neither confirm nor refute a conclusion.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from verl_audio.contract import label_to_word

PREAMBLE = "Let's figure out the logical connection between these premises and the conclusion."
TASK = "Your task is to decide is the conclusion 'entailed' or 'not-entailed' based on these premises"

# (singular, plural); only the plural appears in problems, the singular keeps the list readable.
NOUNS: tuple[tuple[str, str], ...] = (
    ("poet", "poets"), ("painter", "painters"), ("sailor", "sailors"), ("farmer", "farmers"),
    ("teacher", "teachers"), ("singer", "singers"), ("climber", "climbers"), ("gardener", "gardeners"),
    ("baker", "bakers"), ("pilot", "pilots"), ("runner", "runners"), ("collector", "collectors"),
    ("dancer", "dancers"), ("fisher", "fishers"), ("weaver", "weavers"), ("drummer", "drummers"),
)
# (affirmed, negated) verb phrases about one person; the negation is the exact logical negation.
PREDICATES: tuple[tuple[str, str], ...] = (
    ("keeps bees", "does not keep bees"), ("plays the violin", "does not play the violin"),
    ("lives by the sea", "does not live by the sea"), ("speaks Greek", "does not speak Greek"),
    ("grows tomatoes", "does not grow tomatoes"), ("owns a boat", "does not own a boat"),
    ("works at night", "does not work at night"), ("reads poetry", "does not read poetry"),
    ("rides a bicycle", "does not ride a bicycle"), ("bakes bread", "does not bake bread"),
)
NAMES: tuple[str, ...] = (
    "Ana", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo",
    "Iris", "Jonas", "Lena", "Mara", "Noah", "Omar", "Priya", "Sofia",
)
# Strict orders (irreflexive, transitive) versus relations that do not chain.
ORDER_RELATIONS: tuple[str, ...] = (
    "is taller than", "is older than", "runs faster than", "is heavier than", "arrived earlier than",
)
PLAIN_RELATIONS: tuple[str, ...] = ("lives next to", "has met", "is a cousin of", "sits beside")
# Invented institutions, defined by two conditions (each an (affirmed, negated) pair).
DEFINITIONS: tuple[tuple[str, str, tuple[tuple[str, str], tuple[str, str]]], ...] = (
    ("a night market", "market", (("opens at night", "does not open at night"),
                                  ("sells local food", "does not sell local food"))),
    ("a shared workshop", "workshop", (("is owned by its members", "is not owned by its members"),
                                       ("lends tools for free", "does not lend tools for free"))),
    ("a walking school", "school", (("teaches outdoors", "does not teach outdoors"),
                                    ("takes young children", "does not take young children"))),
    ("a repair cafe", "cafe", (("fixes broken items", "does not fix broken items"),
                               ("charges no fee", "charges a fee"))),
    ("a story club", "club", (("meets weekly", "does not meet weekly"),
                              ("writes its own stories", "does not write its own stories"))),
)
STREETS: tuple[str, ...] = ("Elm", "Mill", "Harbour", "Station", "Bridge", "Oak", "Church", "Castle")


@dataclass(frozen=True)
class Problem:
    """One entailment problem; ``label`` is ALR's integer (1 = entailed, 0 = not-entailed)."""

    form: str
    mood: str
    major: str
    minor: str
    conclusion: str
    label: int
    reasoning: str

    @property
    def question(self) -> str:
        """The full question text in the ALR wording."""
        return render_question(self.major, self.minor, self.conclusion)

    @property
    def answer(self) -> str:
        """The reference reasoning, ending with the verdict ('Answer: entailed.')."""
        return f"{self.reasoning} Answer: {label_to_word(self.label)}."


def _upper_first(text: str) -> str:
    # str.capitalize() would also lower-case proper nouns further on.
    return text[:1].upper() + text[1:]


def render_question(major: str, minor: str, conclusion: str) -> str:
    """ALR's question layout: preamble, the three quoted statements, the task sentence."""
    return (
        f"{PREAMBLE}\n\n"
        f'Major premise is "{major}".\nMinor premise is "{minor}".\nConclusion is "{conclusion}".\n\n'
        f"{TASK}"
    )


# Categorical moods over subject S, middle M, predicate P (plural nouns):
# (name, label, major, minor, conclusion, reasoning). Validity is in modern (Boolean) semantics;
# each invalid mood also has a countermodel with every term non-empty, so the verdict does not
# hinge on existential import.
_CATEGORICAL: tuple[tuple[str, int, str, str, str, str], ...] = (
    ("barbara", 1, "All {M} are {P}", "All {S} are {M}", "All {S} are {P}",
     "All {S} are {M}, and all {M} are {P}, so all {S} are {P}."),
    ("celarent", 1, "No {M} are {P}", "All {S} are {M}", "No {S} are {P}",
     "All {S} are {M}, and no {M} are {P}, so no {S} are {P}."),
    ("darii", 1, "All {M} are {P}", "Some {S} are {M}", "Some {S} are {P}",
     "Some {S} are {M}, and all {M} are {P}, so those {S} are {P}."),
    ("ferio", 1, "No {M} are {P}", "Some {S} are {M}", "Some {S} are not {P}",
     "Some {S} are {M}, and no {M} are {P}, so those {S} are not {P}."),
    ("undistributed_middle", 0, "All {P} are {M}", "All {S} are {M}", "All {S} are {P}",
     "{S} and {P} are both among the {M}, but that does not link them; some {S} may not be {P}."),
    ("illicit_major", 0, "All {M} are {P}", "No {S} are {M}", "No {S} are {P}",
     "No {S} are {M}, but {P} need not all be {M}, so some {S} could still be {P}."),
    ("some_some", 0, "Some {M} are {P}", "Some {S} are {M}", "Some {S} are {P}",
     "The {M} who are {P} may be different {M} from those who are {S}."),
    ("illicit_minor", 0, "All {M} are {P}", "All {M} are {S}", "All {S} are {P}",
     "The premises only speak about {M}; {S} who are not {M} need not be {P}."),
)


def _categorical(rng: random.Random, label: int) -> Problem:
    name, _, major, minor, concl, why = rng.choice([m for m in _CATEGORICAL if m[1] == label])
    (s, S), (m, M), (p, P) = rng.sample(NOUNS, 3)
    fill = dict(S=S, M=M, P=P, s=s, m=m, p=p)
    return Problem("categorical", name, major.format(**fill), minor.format(**fill),
                   concl.format(**fill), label, _upper_first(why.format(**fill)))


def _conditional(rng: random.Random, label: int, tollens: bool) -> Problem:
    """Modus ponens / affirming the consequent, or modus tollens / denying the antecedent."""
    x = rng.choice(NAMES)
    (p, not_p), (q, not_q) = rng.sample(PREDICATES, 2)
    major = f"If {x} {p}, then {x} {q}"
    if not tollens and label == 1:
        mood, minor, concl = "modus_ponens", f"{x} {p}", f"{x} {q}"
        why = f"{x} {p}, and by the rule, {x} {q}."
    elif not tollens:
        mood, minor, concl = "affirming_the_consequent", f"{x} {q}", f"{x} {p}"
        why = f"The rule only goes one way; knowing that {x} {q} does not show that {x} {p}."
    elif label == 1:
        mood, minor, concl = "modus_tollens", f"{x} {not_q}", f"{x} {not_p}"
        why = f"If {x} {p}, then {x} {q}. But {x} {not_q}, so {x} {not_p}."
    else:
        mood, minor, concl = "denying_the_antecedent", f"{x} {not_p}", f"{x} {not_q}"
        why = f"The rule says nothing about the case where {x} {not_p}, so whether {x} {q} is left open."
    return Problem("modus_tollens" if tollens else "modus_ponens", mood, major, minor, concl, label, why)


def _transitivity(rng: random.Random, label: int) -> Problem:
    a, b, c = rng.sample(NAMES, 3)
    if label == 1:
        r = rng.choice(ORDER_RELATIONS)
        return Problem("transitivity", "chain", f"{a} {r} {b}", f"{b} {r} {c}", f"{a} {r} {c}", 1,
                       f"{a} {r} {b}, and {b} {r} {c}, so {a} {r} {c}.")
    mood = rng.choice(("common_left", "common_right", "non_transitive"))
    if mood == "common_left":
        r = rng.choice(ORDER_RELATIONS)
        prem, concl = (f"{a} {r} {b}", f"{a} {r} {c}"), f"{b} {r} {c}"
        why = f"Both premises compare {a} with someone else; nothing compares {b} with {c}."
    elif mood == "common_right":
        r = rng.choice(ORDER_RELATIONS)
        prem, concl = (f"{a} {r} {b}", f"{c} {r} {b}"), f"{a} {r} {c}"
        why = f"Both premises compare someone with {b}; nothing compares {a} with {c}."
    else:
        r = rng.choice(PLAIN_RELATIONS)
        prem, concl = (f"{a} {r} {b}", f"{b} {r} {c}"), f"{a} {r} {c}"
        why = f"This relation does not carry over from one pair to the next, so {a} and {c} are not linked."
    return Problem("transitivity", mood, prem[0], prem[1], concl, 0, why)


def _definition(rng: random.Random, label: int) -> Problem:
    """Membership in a defined class: the definition is read as 'exactly those that meet both'."""
    term, genus, conds = rng.choice(DEFINITIONS)
    ask_belongs = rng.random() < 0.5
    # The item meets both conditions iff (asked 'belongs' and entailed) or (asked 'doesn't' and not).
    meets = ask_belongs == (label == 1)
    failed = -1 if meets else rng.randrange(2)
    facts = [neg if i == failed else pos for i, (pos, neg) in enumerate(conds)]
    place = f"the {genus} on {rng.choice(STREETS)} Street"
    major = f"{_upper_first(term)} refers to a {genus} that {conds[0][0]} and {conds[1][0]}"
    verb = "belongs" if ask_belongs else "doesn't belong"
    minor = f"According to the above definition, which of the following {verb} to {term}?"
    concl = f"{_upper_first(place)} {facts[0]} and {facts[1]}"
    if meets:
        verdict = "belongs" if ask_belongs else "does belong"  # 'does' stresses the contradiction
        why = f"It meets both conditions of the definition, so it {verdict} to {term}."
    else:
        why = f"The definition needs a {genus} that {conds[failed][0]}, but this one {conds[failed][1]}, " \
              f"so it does not belong to {term}."
    return Problem("definition", "belongs" if ask_belongs else "does_not_belong", major, minor, concl, label, why)


FORMS = {
    "categorical": _categorical,
    "modus_ponens": lambda rng, label: _conditional(rng, label, tollens=False),
    "modus_tollens": lambda rng, label: _conditional(rng, label, tollens=True),
    "transitivity": _transitivity,
    "definition": _definition,
}


def generate_problems(n: int, seed: int = 0, forms: tuple[str, ...] | None = None) -> list[Problem]:
    """``n`` distinct problems, deterministic in ``seed``.

    Problems come in (entailed, not-entailed) pairs of different forms, so every even-length slice
    starting at an even index is exactly balanced; each block of ``2 * len(forms)`` problems holds
    every form once with each label.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    names = tuple(dict.fromkeys(forms)) if forms is not None else tuple(FORMS)  # dedupe, keep order
    unknown = [f for f in names if f not in FORMS]
    if unknown or not names:
        raise ValueError(f"unknown or no forms {unknown or names}; choose from {sorted(FORMS)}")
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < n:
        # One block at a time, so that a shorter run is a prefix of a longer one with the same seed.
        entailed = rng.sample(names, len(names))
        refuted = rng.sample(names, len(names))
        # Re-shuffle until no pair repeats a form (impossible with one form), for variety per pair.
        while len(names) > 1 and any(x == y for x, y in zip(entailed, refuted)):
            rng.shuffle(refuted)
        block = [item for pos, neg in zip(entailed, refuted) for item in rng.sample([(pos, 1), (neg, 0)], 2)]
        for form, label in block[: n - len(problems)]:
            for _ in range(1000):  # redraw the (rare) exact duplicates
                problem = FORMS[form](rng, label)
                if problem.question not in seen:
                    break
            else:
                raise RuntimeError(f"could not draw a new {form} problem; the vocabulary is too small for n={n}")
            seen.add(problem.question)
            problems.append(problem)
    return problems
