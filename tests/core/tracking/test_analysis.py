"""What a cell reads and binds, from its source alone."""

from nbmlops.core.tracking.analysis import analyze_cell


def test_the_issue_example_cell():
    a = analyze_cell(
        "C = 0.5\n"
        "model = LogisticRegression(C=C, max_iter=500).fit(X_train, y_train)\n"
        "acc = accuracy_score(y_test, model.predict(X_test))\n"
        "plt.plot(model.coef_[0]); plt.title('coefficients')\n"
    )
    assert a.reads == [
        "LogisticRegression",
        "X_train",
        "y_train",
        "accuracy_score",
        "y_test",
        "X_test",
        "plt",
    ]
    assert a.assigned == ["C", "model", "acc"]
    assert a.literals == {"C": 0.5}
    assert a.fit_calls == [(None, "X_train")]


def test_a_name_is_an_input_only_when_read_before_it_is_bound():
    a = analyze_cell("df = df.dropna()\nout = load()\nout.head()\n")
    assert "df" in a.reads
    assert "out" not in a.reads


def test_last_binding_decides_literal_or_computed():
    a = analyze_cell("lr = 0.1\nlr = lr * 2\nk = 3\n")
    assert "lr" not in a.literals
    assert a.literals == {"k": 3}


def test_tuple_unpacking_of_literals_and_of_calls():
    a = analyze_cell("a, (b, c) = 1, (2, 3)\nX_tr, X_te = split(X)\n")
    assert a.literals == {"a": 1, "b": 2, "c": 3}
    assert {"X_tr", "X_te"} <= set(a.assigned)
    assert "X_tr" not in a.literals


def test_loop_targets_imports_and_defs_are_not_assignments():
    a = analyze_cell(
        "import numpy as np\nfrom os import path\nfor i in range(3):\n    total += i\n"
        "def f(z):\n    return z + k\nclass K: pass\nwith open(p) as fh: pass\n"
    )
    assert a.assigned == ["total"]
    assert {"np", "path", "i", "f", "K", "fh"} <= set(a.other_binds)
    assert {"total", "k", "p"} <= set(a.reads)
    assert "z" not in a.reads


def test_comprehension_and_lambda_variables_stay_local():
    a = analyze_cell("sq = [x * x for x in xs if x > thr]\nf = lambda q: q + off\n")
    assert a.reads == ["xs", "thr", "off"]


def test_augmented_assignment_reads_then_binds_computed():
    a = analyze_cell("n += 1\n")
    assert a.reads == ["n"]
    assert a.assigned == ["n"] and a.literals == {}


def test_builtins_are_not_inputs():
    a = analyze_cell("m = max(len(items), 3)\nprint(m)\n")
    assert a.reads == ["items"]


def test_fit_receiver_is_recorded():
    a = analyze_cell("clf = make()\nclf.fit(Xa, ya)\npipe.fit_transform(Xb)\n")
    assert a.fit_calls == [("clf", "Xa"), ("pipe", "Xb")]
