// Packages only one feature needs are optional peers (package.json peerDependenciesMeta): `pg` for
// PostgreSQL, `ioredis` for shared limits. They are imported when that feature first runs; when one
// is not installed the user reads which feature wanted it and what to install, not a bare
// "Cannot find package".
export async function importOptional<T>(name: string, feature: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load()
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if ((e.code === 'ERR_MODULE_NOT_FOUND' || e.code === 'MODULE_NOT_FOUND') && e.message.includes(`'${name}'`)) {
      throw new Error(`${feature} needs the optional package '${name}', which is not installed: run \`npm install ${name}\` in the project that installs relay-mta`, { cause: err })
    }
    throw err
  }
}
