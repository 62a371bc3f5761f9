from cytoreview.export.names import image_key, plane_key, safe_name, safe_names


def test_safe_name_removes_separators_dots_controls_and_reserved():
    assert safe_name("a/b") == "a_b"
    assert safe_name("..") == "unnamed"
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name(".hidden") == "hidden"
    assert safe_name("x\x00y\x1fz\n") == "x_y_z"
    assert safe_name("CON") == "CON_"
    assert safe_name("nul.txt") == "nul.txt_"
    assert safe_name('a<b>c:d"e|f?g*h\\i') == "a_b_c_d_e_f_g_h_i"
    for name in ("a/b", "..", "x\x00y", "tumour / atypical"):
        out = safe_name(name)
        assert "/" not in out and "\\" not in out and not out.startswith(".") and out


def test_safe_name_keeps_unicode_and_names_emoji():
    assert safe_name("épithélium") == "épithélium"
    assert safe_name("核") == "核"
    assert safe_name("🦠") == "microbe"
    assert safe_name("cell 🦠") == "cell _microbe"


def test_safe_name_limits_length():
    assert len(safe_name("é" * 200).encode("utf-8")) <= 80


def test_safe_names_distinct_and_deterministic():
    names = ["a/b", "a_b", "A_B", "🦠", "microbe", "..", "...", "核", "n.o.s."]
    mapping = safe_names(names)
    folded = [v.casefold() for v in mapping.values()]
    assert len(set(folded)) == len(names)
    assert mapping["A_B"] == "A_B"  # already safe (and first in sort order): keeps its form
    assert mapping["a/b"].startswith("a_b~") and mapping["a_b"].startswith("a_b~")
    assert safe_names(["a/b", "a_b"])["a_b"] == "a_b"
    assert safe_names(list(reversed(names))) == mapping


def test_image_keys_are_deidentified():
    assert image_key(3, "case/01") == "case_01_img3"
    assert image_key(3, None) == "img3"
    assert image_key(3, float("nan")) == "img3"
    assert plane_key(3, "C", 4, "fields") == "C_img3_f004"
    assert plane_key(3, "C", 0, "wsi") == "C_img3"
