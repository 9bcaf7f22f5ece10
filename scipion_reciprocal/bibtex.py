# -*- coding: utf-8 -*-
r"""
@article{Gilles2025recovar,
title = {Cryo-EM heterogeneity analysis using regularized covariance estimation and kernel regression},
author = {Gilles, Marc Aur{\`e}le and Singer, Amit},
journal = {Proceedings of the National Academy of Sciences},
volume = {122},
number = {9},
pages = {e2419140122},
year = {2025},
doi = {10.1073/pnas.2419140122}
}

@article{Scheres2012relion,
title = {{RELION}: implementation of a Bayesian approach to cryo-EM structure determination},
author = {Scheres, Sjors H. W.},
journal = {Journal of Structural Biology},
volume = {180},
number = {3},
pages = {519--530},
year = {2012},
doi = {10.1016/j.jsb.2012.09.006}
}

@article{Zivanov2018relion3,
title = {New tools for automated high-resolution cryo-EM structure determination in {RELION}-3},
author = {Zivanov, Jasenko and Nakane, Takanori and Forsberg, Bj{\"o}rn O. and Kimanius, Dari and Hagen, Wim J. H. and Lindahl, Erik and Scheres, Sjors H. W.},
journal = {eLife},
volume = {7},
pages = {e42166},
year = {2018},
doi = {10.7554/eLife.42166}
}

@article{Punjani2017cryosparc,
title = {{cryoSPARC}: algorithms for rapid unsupervised cryo-{EM} structure determination},
author = {Punjani, Ali and Rubinstein, John L. and Fleet, David J. and Brubaker, Marcus A.},
journal = {Nature Methods},
volume = {14},
number = {3},
pages = {290--296},
year = {2017},
doi = {10.1038/nmeth.4169}
}

@article{Hubert1985ari,
title = {Comparing partitions},
author = {Hubert, Lawrence and Arabie, Phipps},
journal = {Journal of Classification},
volume = {2},
number = {1},
pages = {193--218},
year = {1985},
doi = {10.1007/BF01908075}
}

@article{Vinh2010nmi,
title = {Information theoretic measures for clusterings comparison: variants, properties, normalization and correction for chance},
author = {Vinh, Nguyen Xuan and Epps, Julien and Bailey, James},
journal = {Journal of Machine Learning Research},
volume = {11},
pages = {2837--2854},
year = {2010}
}

@article{Benjamini1995fdr,
title = {Controlling the false discovery rate: a practical and powerful approach to multiple testing},
author = {Benjamini, Yoav and Hochberg, Yosef},
journal = {Journal of the Royal Statistical Society: Series B (Methodological)},
volume = {57},
number = {1},
pages = {289--300},
year = {1995},
doi = {10.1111/j.2517-6161.1995.tb02031.x}
}

@article{Jaccard1912,
title = {The distribution of the flora in the alpine zone},
author = {Jaccard, Paul},
journal = {New Phytologist},
volume = {11},
number = {2},
pages = {37--50},
year = {1912},
doi = {10.1111/j.1469-8137.1912.tb05611.x}
}

@article{Rosenthal2003fsc,
title = {Optimal determination of particle orientation, absolute hand, and contrast loss in single-particle electron cryomicroscopy},
author = {Rosenthal, Peter B. and Henderson, Richard},
journal = {Journal of Molecular Biology},
volume = {333},
number = {4},
pages = {721--745},
year = {2003},
doi = {10.1016/j.jmb.2003.07.013}
}

@article{Wang2016deeppicker,
title = {{DeepPicker}: A deep learning approach for fully automated particle picking in cryo-{EM}},
author = {Wang, Feng and Gong, Huichao and Liu, Gaochao and Li, Meijing and Yan, Chuangye and Xia, Tian and Li, Xueming and Zeng, Jianyang},
journal = {Journal of Structural Biology},
volume = {195},
number = {3},
pages = {325--336},
year = {2016},
doi = {10.1016/j.jsb.2016.07.006}
}

@article{Abadi2016tensorflow,
title = {{TensorFlow}: A system for large-scale machine learning},
author = {Abadi, Mart{\'i}n and others},
journal = {12th USENIX Symposium on Operating Systems Design and Implementation (OSDI 16)},
pages = {265--283},
year = {2016}
}
"""
