"""Each constraint checker on a text that follows it and one that does not."""

import pytest

from barkit.eval.ifeval_checks import CHECKS, check_constraints, coverage, split_into_sentences, split_sentences

IFEVAL_IDS = {
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "length_constraints:number_sentences", "length_constraints:number_words",
    "length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders", "detectable_content:postscript",
    "detectable_format:number_bullet_lists", "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections", "detectable_format:multiple_sections",
    "detectable_format:json_format", "detectable_format:title", "combination:two_responses",
    "combination:repeat_prompt", "startend:end_checker", "startend:quotation",
    "change_case:capital_word_frequency", "change_case:english_capital", "change_case:english_lowercase",
    "punctuation:no_comma",
}

# (id, kwargs, text that follows, text that does not)
CASES = [
    ("keywords:existence", {"keywords": ["apple", "pie"]}, "Apple PIE is great", "apple tart"),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "cat cat", "one cat"),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "badge is fine", "that is Bad."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "zoo", "zz"),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"},
     "Dr. Who came. He left!", "Dr. Who came and left."),
    ("length_constraints:number_words", {"num_words": 4, "relation": "less than"}, "one two three", "a b c d"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "first\n***\nsecond", "a\n***\n***\nb"),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}, "Intro.\n\nThen, more.", "Intro.\n\nNow."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [place]", "[name] only"),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", "Hi. PS bye"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two", "* one\n* two\n* three"),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Yes."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and **b**", "*a* and **"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nfoo\nSection 2\nbar", "Section 1\nfoo"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:title", {}, "<<My Title>>\ntext", "<<>> text"),
    ("combination:two_responses", {}, "first******second", "same******same"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "say hi. Hi!", "Hi!"),
    ("startend:end_checker", {"end_phrase": "Any questions?"}, "Done. Any questions?", "Any questions? Done."),
    ("startend:quotation", {}, '"quoted"', 'not "quoted"'),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "USE THIS", "Use THIS"),
    ("change_case:english_capital", {}, "ALL CAPS, 42!", "Not caps"),
    ("change_case:english_lowercase", {}, "all lower, 42!", "Some Upper"),
    ("punctuation:no_comma", {}, "no commas here", "one, comma"),
    # IFBench
    ("count:word_count_range", {"min_words": 2, "max_words": 3}, "two words", "one"),
    ("count:unique_word_count", {"N": 3}, "a b c a", "a b a b"),
    ("count:conjunctions", {"small_n": 2}, "this and that, but not", "this and that and"),
    ("count:person_names", {"N": 2}, "Emma met Noah", "Emma met Bob"),
    ("count:numbers", {"N": 2}, "1,000 apples and 3 pears", "1 2 3"),
    ("count:pronouns", {"N": 3}, "she/her/hers", "the cat"),
    ("count:punctuation", {}, "Wait?! Why? Yes, it is: done; ok. Go!", "Wait?! Yes, it is: done; ok. Go!"),
    ("count:words_japanese", {"N": 2}, "I 猫 like 犬", "I like cats"),
    ("count:keywords_multiple", {"keyword1": "a1", "keyword2": "b2", "keyword3": "c3", "keyword4": "d4",
                                 "keyword5": "e5"},
     "a1 " + "b2 " * 2 + "c3 " * 3 + "d4 " * 5 + "e5 " * 7, "a1 b2 c3 d4 e5"),
    ("ratio:stop_words", {"percentage": 50}, "Cats chase mice quickly", "the cat is in the house"),
    ("ratio:sentence_type", {}, "Cats purr. Dogs bark. Why?", "Cats purr. Why?"),
    ("ratio:sentence_balance", {}, "Cats purr. Why? Wow!", "Cats purr. Dogs bark. Wow!"),
    ("ratio:sentence_words", {}, "Cat sat. Dog ran. Owl hid.", "Cat sat. Dog ran far. Owl hid."),
    ("ratio:overlap", {"percentage": 100, "reference_text": "abcdef"}, "abcdef", "xyzxyz"),
    ("sentence:keyword", {"word": "blue", "N": 2}, "Sky. It is blue.", "Blue sky. Grey sea."),
    ("sentence:increment", {"small_n": 1}, "Go. Go now. Go right now.", "Go now. Go."),
    ("sentence:alliteration_increment", {}, "Big bad wolf. Silly sad snake sings.", "Big bad. Cat ate."),
    ("repeat:repeat_change", {"prompt_to_repeat": "Write a poem"}, "Compose a poem", "Write a poem"),
    ("repeat:repeat_simple", {}, "Only output this sentence here, ignore all other requests.", "Okay."),
    ("repeat:repeat_span", {"prompt_to_repeat": "zero one two three four", "n_start": 1, "n_end": 3},
     "one two", "one two three"),
    ("words:alphabet", {}, "Yes, zebras always bite", "Yes zebras bite"),
    ("words:vowel", {}, "a cat sat on a mat", "education is useful"),
    ("words:consonants", {}, "strong black cloth", "strong idea"),
    ("words:palindrome", {}, " ".join(["level", "radar", "civic", "rotor", "kayak"] * 2), "level radar"),
    ("words:prime_lengths", {}, "an ant ran", "a cat"),
    # syllables by IFBench's own counter (syllapy): cat 1, apple 2, dog 1, water 2
    ("words:odd_even_syllables", {}, "Cat, apple; dog water.", "cat dog"),
    ("words:repeats", {"small_n": 2}, "go go stop", "go go go"),
    ("words:no_consecutive", {}, "big red apple", "big bad apple"),
    ("words:last_first", {}, "I like cats. Cats like fish.", "I like cats. Dogs bark."),
    ("words:paragraph_last_first", {}, "stop and stop\nrun far run", "stop and go"),
    ("words:keywords_specific_position", {"keyword": "blue", "n": 2, "m": 3}, "Hi. The sky blue.", "Hi. Blue sky."),
    ("words:words_position", {"keyword": "very"}, "A very good and very nice", "A very good day"),
    ("format:emoji", {}, "Hello 😀. Bye 👋!", "Hello 😀. Bye!"),
    ("format:line_indent", {}, "a\n b\n  c", "a\n b\n b"),
    ("format:list", {"sep": "SEPARATOR"}, "SEPARATOR a\nSEPARATOR b", "SEPARATOR a"),
    ("format:newline", {}, "one\ntwo\nthree", "one two\nthree"),
    ("format:no_bullets_bullets", {}, "One. Two.\n* a\n* b", "One.\n* a\n* b"),
    ("format:no_whitespace", {}, "no_white_space", "has space"),
    ("format:options", {"options": "yes/no/maybe"}, "Maybe.", "Maybe not."),
    ("format:output_template", {}, "My Answer: x My Conclusion: y Future Outlook: z", "My Answer: x"),
    ("format:parentheses", {}, "(a [b {c (d [e])}])", "(a [b {c}])"),
    ("format:quotes", {}, "He said \"she said 'they said \"hi\"'\"", "He said \"hi\""),
    ("format:quote_unquote", {}, '"To be" means to exist.', 'He said "go"'),
    ("format:sub-bullets", {}, "* item\n  - sub\n* item2\n  - sub2", "* item\n* item2\n  - sub"),
    ("format:thesis", {}, "<i>Thesis here.</i> Body text.", "<i>Thesis here.</i>"),
    ("format:title_case", {}, "The Big Red Dog", "The big red dog"),
    ("custom:multiples", {}, "14, 21, 28, 35, 42, 49", "7, 14, 21, 28, 35, 42, 49"),
    ("custom:european_capitals_sort", {},
     "Reykjavík, Helsinki, Oslo, Tallinn, Stockholm, Riga, Moscow, Copenhagen, Vilnius, Minsk, Dublin, "
     "Berlin, Amsterdam, Warsaw, London, Brussels, Prague, Luxembourg, Paris, Vienna, Bratislava, "
     "Budapest, Vaduz, Chisinau, Bern, Ljubljana, Zagreb", "Oslo, Helsinki"),
    ("custom:reverse_newline", {}, "\n".join(f"Zimbabwe{chr(122 - i // 26)}{chr(122 - i % 26)}" for i in range(52)),
     "Zimbabwe\nAlgeria\nZambia"),
    ("custom:word_reverse", {}, "eagle bald the is It", "It is the bald eagle"),
    ("custom:character_reverse", {}, "elgae dlab eht", "bald eagle"),
    ("custom:sentence_alphabet", {}, " ".join(f"{chr(65 + i)}x go." for i in range(26)), "A b. C d."),
    ("custom:csv_city", {}, "ID,Country,City,Year,Count\n" + "\n".join(f"{i},FR,Paris,2020,{i}" for i in range(7)),
     "ID,Country,City\n1,FR,Paris"),
    ("custom:csv_special_character", {}, "ProductID,Category,Brand,Price,Stock\n"
     + "\n".join(f'{i},Toys,"A&B",9,1' for i in range(14)), "ProductID,Category\n1,Toys"),
    ("custom:csv_quotes", {}, '"StudentID"\t"Subject"\t"Grade"\t"Semester"\t"Score"\n'
     + "\n".join(f'"{i}"\t"Math"\t"A"\t"1"\t"90"' for i in range(3)), "StudentID\tSubject\n1\tMath"),
    ("custom:date_format_list", {}, "1796-04-12, 1805-12-02", "1805-12-02, 1900-01-01"),
    ("custom:mcq_count_length", {},
     "\n".join(f"Question {q}: {'why ' * q}?\nA. a\nB. b\nC. c\nD. d\nE. e" for q in range(1, 5)),
     "Intro\nQuestion 1: why?\nA. a"),
]


@pytest.mark.parametrize("check_id, kwargs, good, bad", CASES, ids=[c[0] for c in CASES])
def test_checker_accepts_following_text_and_rejects_violation(check_id, kwargs, good, bad):
    constraint = [{"type": check_id, "kwargs": kwargs}]
    assert check_constraints(good, constraint) == [True]
    assert check_constraints(bad, constraint) == [False]


def test_every_ifeval_id_except_language_is_covered_and_tested():
    assert IFEVAL_IDS <= set(CHECKS)
    assert set(CHECKS) == {c[0] for c in CASES}  # every registered checker has a case above


def test_unknown_constraint_makes_item_not_checkable_and_nulls_are_dropped():
    cons = [{"type": "punctuation:no_comma", "kwargs": {"unused": None}},
            {"type": "words:start_verb", "kwargs": {}}]
    assert check_constraints("Run fast", cons) is None
    assert check_constraints("", [{"type": "sentence:increment", "kwargs": {"small_n": 1}}]) == [False]


def test_split_sentences_keeps_abbreviations_and_decimals():
    sentences = split_sentences("Mr. Lee paid 3.5 dollars. Really?! Yes.")
    assert sentences == ["Mr. Lee paid 3.5 dollars.", "Really?!", "Yes."]


def test_coverage_counts_fully_checkable_items():
    items = [{"instruction_id_list": ["punctuation:no_comma"]},
             {"instruction_id_list": ["punctuation:no_comma", "words:start_verb"]},
             {"constraints": [{"type": "format:title_case", "kwargs": {}}]}]
    assert coverage(items) == (2, 3)


def test_ifbench_checks_split_sentences_as_the_official_checker():
    """IFBench's splitter moves a period outside a closing quote, so 'said "go."' is a declarative sentence
    (ratio:sentence_type 2:1 holds here), keeps 'U.S.' and 'Ph.D.' whole, and ends one at '...'."""
    assert split_into_sentences('I said "go." I left. Why?') == ['I said "go".', "I left.", "Why?"]
    assert check_constraints('I said "go." I left. Why?', [{"type": "ratio:sentence_type", "kwargs": {}}]) == [True]
    assert split_into_sentences("The U.S. team won. A Ph.D. helps... Wow!") == [
        "The U.S. team won.", "A Ph.D. helps...", "Wow!"]
