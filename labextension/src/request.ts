/**
 * Calls to the nbmlops server extension through ServerConnection.makeRequest, which adds
 * the server's token and, for POST, the XSRF header.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  parseAlerts,
  parseJournal,
  parseLineage,
  parseModels,
  parseRefusal,
  parseRunDetails,
  parseRuns
} from './api';
import { ActionOutcome, IClient, IPromoteBody } from './model';

/** The REST namespace of the server extension. */
export const API_ROOT = 'nbmlops/api';

/** A request the server answered with an error status; `body` is its parsed JSON, if any. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    url: string
  ) {
    super(ApiError.describe(status, body, url));
    this.name = 'ApiError';
  }

  static describe(status: number, body: unknown, url: string): string {
    // the server's errors say what is wrong and how to fix it: {"error", "where", "fix"}
    let reason = String(body ?? '');
    if (typeof body === 'object' && body !== null) {
      const b = body as Record<string, unknown>;
      const what = b.error ?? b.reason ?? b.message;
      reason = what === undefined ? JSON.stringify(body) : String(what);
      if (typeof b.fix === 'string' && b.fix) {
        reason += ` (${b.fix})`;
      }
    }
    if (status === 404) {
      return (
        `nbmlops server extension not found at ${url} (404): is nbmlops installed in the ` +
        "server's environment and enabled (jupyter server extension list)?"
      );
    }
    return `${url} answered ${status}${reason ? ': ' + reason : ''}`;
  }
}

/** Call the server extension and return the answer's JSON; errors raise ApiError. */
export async function requestAPI(
  endPoint: string,
  settings: ServerConnection.ISettings,
  init: RequestInit = {}
): Promise<unknown> {
  const url = URLExt.join(settings.baseUrl, API_ROOT, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let body: unknown = text;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON (a proxy's HTML error page): keep the text for the message
    }
  }
  if (!response.ok) {
    throw new ApiError(response.status, body, `/${API_ROOT}/${endPoint}`);
  }
  return body;
}

/** A query string from the parameters that have a value. */
export function query(
  params: Record<string, string | number | null | undefined>
): string {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(
      ([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`
    );
  return parts.length ? `?${parts.join('&')}` : '';
}

/** The IClient of the panel model over the REST API. */
export class RestClient implements IClient {
  constructor(private readonly settings: ServerConnection.ISettings) {}

  private get(endPoint: string): Promise<unknown> {
    return requestAPI(endPoint, this.settings);
  }

  private async post(endPoint: string, body: unknown): Promise<ActionOutcome> {
    try {
      const result = await requestAPI(endPoint, this.settings, {
        method: 'POST',
        body: JSON.stringify(body)
      });
      return { ok: true, result };
    } catch (err) {
      // 409 is a refusal by the gates or confirmations; a role refusal may come as 403
      // with `refused: true`: both carry reasons the panel shows in place
      const refused =
        err instanceof ApiError &&
        (err.status === 409 ||
          (typeof err.body === 'object' &&
            (err.body as any)?.refused === true));
      if (refused) {
        return { ok: false, refusal: parseRefusal((err as ApiError).body) };
      }
      throw err;
    }
  }

  async runs(q: Parameters<IClient['runs']>[0]): ReturnType<IClient['runs']> {
    return parseRuns(await this.get('runs' + query({ ...q })));
  }
  async run(runId: string): ReturnType<IClient['run']> {
    return parseRunDetails(await this.get(`runs/${encodeURIComponent(runId)}`));
  }
  async models(): ReturnType<IClient['models']> {
    return parseModels(await this.get('models'));
  }
  async lineage(node: string): ReturnType<IClient['lineage']> {
    return parseLineage(await this.get(`lineage/${encodeURIComponent(node)}`));
  }
  async alerts(): ReturnType<IClient['alerts']> {
    return parseAlerts(await this.get('alerts'));
  }
  async journal(): ReturnType<IClient['journal']> {
    return parseJournal(await this.get('journal'));
  }
  promote(name: string, body: IPromoteBody): Promise<ActionOutcome> {
    return this.post(`models/${encodeURIComponent(name)}/promote`, body);
  }
  rollback(
    name: string,
    body: { alias: string; confirm: boolean }
  ): Promise<ActionOutcome> {
    return this.post(`models/${encodeURIComponent(name)}/rollback`, body);
  }
  approve(
    name: string,
    body: { version: string; reason: string }
  ): Promise<ActionOutcome> {
    return this.post(`models/${encodeURIComponent(name)}/approve`, body);
  }
}
