"""semscale.study.paper: the published numbers name what the study has (methods, variants, Table 1's measures)."""

from semscale import data
from semscale.methods import METHODS
from semscale.study import bias, paper


def test_table1_measures_are_study_bias_columns():
    # every measure of the paper's Table 1, in its order; ours adds the count-only null
    assert paper.TABLE1_MEASURES == [c for c in bias.measure_columns() if c != bias.COUNT_CURVE]
    assert list(paper.PAPER_TABLE1.columns) == ["data", "model", *paper.TABLE1_MEASURES]


def test_table1_holds_the_papers_four_rows_of_correlations():
    table = paper.PAPER_TABLE1
    assert table[["data", "model"]].values.tolist() == [["CIFAR-10-LT (IF 200)", "ResNet-18"], ["CIFAR-10-LT (IF 200)", "ResNet-34"],
                                                        ["CIFAR-10", "ResNet-18"], ["CIFAR-10", "ResNet-34"]]
    values = table[paper.TABLE1_MEASURES]
    assert ((values > 0) & (values < 1)).all().all()
    # on balanced CIFAR-10, N and E_n are the same measure (every class has 5000 images): one number
    balanced = table[table.data == "CIFAR-10"]
    assert (balanced.N == balanced.E_n).all()
    assert table.loc[1, "S_a2"] == 0.9884  # the paper's best: S at α = 2, ResNet-34 on CIFAR-10-LT


def test_counterparts_pair_our_variants_with_table1s_data():
    assert set(paper.PAPER_COUNTERPART) <= set(bias.VARIANTS)
    assert sorted(paper.PAPER_COUNTERPART.values()) == sorted(paper.PAPER_TABLE1.data.unique())


def test_published_top1_names_catalogue_methods_and_stand_in_benchmarks():
    pub = paper.PUBLISHED
    assert list(pub.columns) == ["method", "published_benchmark", "imbalance", "published_top1_pct", "published_source"]
    assert set(pub.method) <= set(METHODS)
    assert set(pub.published_benchmark) == set(paper.STAND_IN.values())
    assert set(paper.STAND_IN) <= set(data.DATASETS)
    assert pub.published_top1_pct.between(30, 90).all() and set(pub.imbalance) <= {10, 50, 100, 200}
    assert not pub.duplicated(["method", "published_benchmark", "imbalance", "published_source"]).any()
    # CDB-CE on CIFAR-100-LT twice: the peers' number and the paper's own (Fig. 18)
    twice = pub[pub.duplicated(["method", "published_benchmark", "imbalance"], keep=False)]
    assert set(twice.method) == {"CDB-CE"} and twice.published_source.nunique() == 2
    one = pub.drop_duplicates(["method", "published_benchmark", "imbalance"]).set_index(
        ["method", "published_benchmark", "imbalance"]).published_top1_pct
    assert one["CE", "CIFAR-10-LT (official CIFAR)", 100] == 70.4
    assert one["CE+DSB", "CIFAR-100-LT (official CIFAR)", 100] == 45.5
    assert one["MWN", "CIFAR-10-LT (official CIFAR)", 100] == 75.21


def test_paper_gains_name_catalogue_methods():
    gains = paper.PAPER_GAINS
    assert set(gains.method) <= set(METHODS) and (gains.paper_gain_points > 0).all()
    assert gains.set_index(["method", "paper_setting"]).paper_gain_points["CE", "ImageNet-LT, ResNeXt-50"] == 4.8
