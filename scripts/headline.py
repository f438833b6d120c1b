"""The report's headline table: accuracy at the largest model count, or N_eff per width."""

from multirun import contracts, headline, snake


def main(smk):
    rows = contracts.load_csv(smk.input.table)
    try:
        if smk.params.table == "accuracy":
            table = headline.accuracy_table(rows, smk.params.k)
        else:
            table = headline.effdim_table(rows, smk.params.z)
    except contracts.ContractError as err:  # the table lacks the rows the config asks for
        raise contracts.ContractError(f"{smk.input.table}: {err}; "
                                      f"{contracts.remake(smk.input.table)}") from err
    header, *body = table
    contracts.save_csv(smk.output.table, [dict(zip(header, r, strict=True)) for r in body], header)


snake.run(snakemake, main)
