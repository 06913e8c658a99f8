import re

import pytest

from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.nn.models import (
    DiffMMConfig,
    LightGCNConfig,
    LightGCNRecommender,
    MostPopular,
    build_diffmm,
    build_mmssl,
)

BUILDERS = {
    'lightgcn': lambda d: LightGCNRecommender(30, 20, LightGCNConfig()),
    'most_popular': lambda d: MostPopular(30, 20),
    'diffmm': lambda d: build_diffmm(d, DiffMMConfig()),
    'mmssl': build_mmssl,
}


@pytest.mark.parametrize('model', list(BUILDERS), ids=list(BUILDERS))
@pytest.mark.parametrize('users,items', [(31, 20), (30, 19)])
def test_prepare_refuses_data_of_another_size(model, users, items):
    # A model trained silently on a data set of another size failed only
    # later (in recommend), or with an index error deep in a layer.
    built_for = make_synthetic(SyntheticConfig(num_users=30, num_items=20))
    other = make_synthetic(SyntheticConfig(num_users=users, num_items=items))
    recommender = BUILDERS[model](built_for)
    recommender.prepare(built_for.clone())
    with pytest.raises(ValueError, match=re.escape(
            f'the data has {users} users and {items} items, the model was '
            f'built for 30 and 20')):
        recommender.prepare(other)
